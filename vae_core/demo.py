"""A ready lecture demonstration of posterior collapse: one run that collapses and the same run cured, read from
shipped sweeps (`checkpoints/sweeps/`), so that it opens in seconds with nothing to train.

Each demo is a pair of runs of one sweep that differ in one setting only. "collapse": Fashion-MNIST, d = 16,
β = 4 (β-VAE, Higgins et al. 2017), without and with free bits λ = 0.5 (Kingma et al. 2016: each dimension's
batch-mean KL is charged at least λ, so pushing it below λ gains nothing). "decoder": a PixelCNN decoder at β = 1
(Bowman et al. 2016; Chen et al. 2017), without and with the same free bits. Their training replays
(`replay.py`) are aligned by epoch number so that one scrubber moves both; every figure of one epoch uses the
same axes for both runs (the map's ±limit holds every drawn ±2σ ellipse of either run at every epoch,
`replay_plots.map_limit`), so the two sides can be compared by eye. The rate–distortion plane (Alemi et al. 2018):
rate R = E_x KL(q(z|x) ‖ p(z)), distortion D = E_x E_q[−log p(x|z)], −ELBO = R + D, in nats per test image.

Pure library code (no Streamlit): the page `app_pages/6_Collapse_demo.py` draws what this returns.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import lab_plots, pictures, rd_plane, replay, replay_plots, store
from .collapse import KL_COLLAPSED
from .config import ObjectiveConfig
from .pictures import PALETTE
from .plots import layout
from .replay import Replay
from .sweep import MANIFEST, SweepSpec


class DemoError(ValueError):
    """A demo's runs cannot be read."""


@dataclass(frozen=True)
class Demo:
    """Two runs of one shipped sweep: `collapsed` loses latent dimensions as it trains, `cured` is the same run with
    one setting changed."""

    key: str  # what `?demo=` names
    title: str
    sweep: str  # the shipped sweep's folder name
    collapsed: str  # run file stems in it
    cured: str
    cause: str  # why the first run collapses, one clause for the captions


DEMOS = {
    "collapse": Demo("collapse", "β = 4 on Fashion-MNIST", "fashion-every-cure-d16", "beta4_fb0_wu0", "beta4_fb0.5_wu0",
                     "β = 4 charges every nat of code four times (Higgins et al. 2017)"),
    "decoder": Demo("decoder", "a strong (PixelCNN) decoder on Fashion-MNIST", "fashion-pixelcnn-d16", "beta1_fb0_wu0",
                    "beta1_fb0.5_wu0", "its PixelCNN decoder models the pixels without z (Chen et al. 2017)"),
}
DEFAULT = "collapse"
MAX_DEMO_EPOCHS = 200


@dataclass
class Side:
    """One run of a demo: its checkpoint, replay and end-of-run evaluation (the sweep manifest's entry)."""

    role: str  # "collapsed" or "cured"
    name: str
    checkpoint: Path
    replay: Replay
    evaluation: dict

    @property
    def label(self) -> str:
        return lab_plots.run_label(self.evaluation)

    @property
    def objective(self) -> ObjectiveConfig:
        return lab_plots.objective_of(self.evaluation)


@dataclass
class Pair:
    demo: Demo
    folder: Path
    spec: SweepSpec
    image_shape: tuple
    collapsed: Side
    cured: Side

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.collapsed, self.cured

    @property
    def latent_dim(self) -> int:
        return int(self.collapsed.replay.kl_per_dim.shape[1])

    @property
    def collapsed_distortion(self) -> float | None:
        """D of a decoder that ignores z on the sweep's data (`sweep.collapsed_distortion`), from the manifest."""
        return self.collapsed.evaluation.get("collapsed_distortion")


def demo_for(key) -> Demo:
    """The demo `?demo=` names; the default one for anything else."""
    return DEMOS.get(str(key), DEMOS[DEFAULT]) if key is not None else DEMOS[DEFAULT]


def shipped_folder(demo: Demo) -> Path:
    return store.shipped_sweeps_dir() / demo.sweep


def load_pair(demo: Demo, folder: str | Path | None = None) -> Pair:
    """The demo's two runs from `folder` (default: the shipped sweep): manifest entries and replays, no weights
    (the page loads those for the pictures). DemoError when a run, its replay or the manifest is missing."""
    folder = Path(folder) if folder is not None else shipped_folder(demo)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        spec = SweepSpec.from_dict(manifest["spec"])
        entries = {e["name"]: e for e in manifest["runs"] if isinstance(e, dict) and "name" in e}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DemoError(f"{folder.name} is not a readable sweep ({err})") from None
    sides = []
    for role, name in (("collapsed", demo.collapsed), ("cured", demo.cured)):
        if name not in entries:
            raise DemoError(f"{folder.name} has no finished run {name}")
        entry = entries[name]
        path = folder / Path(str(entry.get("file", f"{name}.safetensors"))).name
        try:
            recorded = replay.load(replay.path_for(path))
        except replay.ReplayError as err:
            raise DemoError(f"run {name}: {err}") from None
        evaluation = {k: v for k, v in entry.items() if k not in ("name", "file")}
        sides.append(Side(role, name, path, recorded, evaluation))
    return Pair(demo, folder, spec, tuple(manifest.get("image_shape", ())), *sides)


# ---------------------------------------------------------------- one scrubber for both replays

def epochs(pair: Pair) -> list[int]:
    """Every epoch recorded by either replay, in order: the scrubber's stops."""
    return sorted({int(e) for side in pair.sides for e in side.replay.epochs})


def frame_at(rp: Replay, epoch: int) -> int:
    """The index of the frame shown at `epoch`: the last one recorded at or before it (the first, before any)."""
    idx = int(np.searchsorted(rp.epochs, epoch, side="right")) - 1
    return max(0, idx)


def map_limit(pair: Pair) -> float:
    """One ±limit for both runs' maps at every epoch, holding all their means and drawn ±2σ ellipses."""
    return max(replay_plots.map_limit(side.replay) for side in pair.sides)


def kl_limit(pair: Pair) -> float:
    """One top for both runs' KL bars at every epoch."""
    return max(float(side.replay.kl_per_dim.max()) for side in pair.sides) * 1.1 or 1.0


@dataclass(frozen=True)
class Moment:
    """One run at one epoch, as its replay recorded it on the probe images."""

    epoch: int
    active_units: int
    latent_dim: int
    rate: float
    at_prior: tuple[int, ...]  # dimensions with KL under `collapse.KL_COLLAPSED` nats
    mutual_info: float

    @property
    def line(self) -> str:
        at = len(self.at_prior)
        return (f"epoch {self.epoch}: {self.active_units} of {self.latent_dim} units active · rate {self.rate:.2f} nats"
                f" · {at} dimension{'' if at == 1 else 's'} at the prior")


def moment(rp: Replay, epoch: int) -> Moment:
    e = frame_at(rp, epoch)
    kl = rp.kl_per_dim[e]
    return Moment(int(rp.epochs[e]), int(rp.active_units[e]), len(kl), float(kl.sum()),
                  tuple(int(j) for j in np.flatnonzero(kl < KL_COLLAPSED)), float(rp.mutual_info[e]))


def _png_uri(picture: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(pictures.png_bytes(picture)).decode()


def epoch_figure(rp: Replay, epoch: int, lim: float, kl_max: float, free_bits: float = 0.0, *, font: int = 13,
                 height: int = 640) -> go.Figure:
    """One run at one epoch: the probe's posterior means on the map (colour = class) with the ±2σ ellipses of
    q(z|x) of a few (the same as the replay draws), the decoder lattice (when recorded), and the KL of each latent
    dimension (grey: under `KL_COLLAPSED` nats, at the prior; dashed: the free-bits floor λ). `lim` and `kl_max`
    fix the axes, so that both runs and all epochs share them."""
    e = frame_at(rp, epoch)
    lattice = rp.lattice is not None
    fig = make_subplots(rows=2, cols=2 if lattice else 1, row_heights=[0.7, 0.3], vertical_spacing=0.14,
                        horizontal_spacing=0.08, column_widths=[0.55, 0.45] if lattice else None,
                        specs=([[{"type": "xy"}, {"type": "xy"}], [{"type": "xy", "colspan": 2}, None]] if lattice
                               else [[{"type": "xy"}], [{"type": "xy"}]]),
                        subplot_titles=["posterior means, ±2σ ellipses"]
                        + (["decoder on a ±2σ grid"] if lattice else []) + ["KL per latent dimension (nats)"])
    shown = np.arange(min(replay_plots.SHOWN, len(rp.probe_ids)))
    xy = rp.means[e, shown]
    colours = (["#888"] * len(shown) if rp.labels is None
               else [PALETTE[int(v) % len(PALETTE)] for v in rp.labels[shown]])
    fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                             marker=dict(size=4, color=colours, opacity=0.55)), row=1, col=1)
    ring_x, ring_y = [], []
    for i in range(min(replay_plots.ELLIPSES, len(shown))):
        ring = replay_plots._ellipse(rp.means[e, shown[i]], rp.cov[e, shown[i]])
        ring_x += [*ring[:, 0], None]
        ring_y += [*ring[:, 1], None]
    fig.add_trace(go.Scatter(x=ring_x, y=ring_y, mode="lines", line=dict(color="#d62728", width=1.5),
                             hoverinfo="skip", showlegend=False), row=1, col=1)
    if lattice:
        fig.add_trace(go.Image(source=_png_uri(rp.lattice[e]), hoverinfo="skip"), row=1, col=2)
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
    kl = rp.kl_per_dim[e]
    bar_row = 2
    fig.add_trace(go.Bar(x=np.arange(len(kl)), y=kl, showlegend=False,
                         marker_color=["#bbbbbb" if v < KL_COLLAPSED else "#1f77b4" for v in kl],
                         hovertemplate="z%{x}: %{y:.3f} nats<extra></extra>"), row=bar_row, col=1)
    if free_bits > 0:
        fig.add_hline(y=free_bits, line=dict(color="black", dash="dash", width=1), row=bar_row, col=1,
                      annotation_text=f"free bits λ = {free_bits:g}", annotation_position="top right",
                      annotation_font=dict(size=font - 2))
    layout(fig, None, height, top=40)
    fig.update_xaxes(range=[-lim, lim], title=dict(text=rp.axes[0], font=dict(size=font - 2), standoff=4),
                     constrain="domain", row=1, col=1)
    fig.update_yaxes(range=[-lim, lim], title=dict(text=rp.axes[1], font=dict(size=font - 2), standoff=4),
                     scaleanchor="x", scaleratio=1, constrain="domain", row=1, col=1)
    fig.update_xaxes(title=dict(text="latent dimension j", font=dict(size=font - 2)), dtick=1 if len(kl) <= 16 else None,
                     row=bar_row, col=1)
    fig.update_yaxes(range=[0, kl_max], row=bar_row, col=1)
    fig.update_layout(font=dict(size=font), bargap=0.15, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_annotations(font_size=font)
    return fig


# ---------------------------------------------------------------- the rate–distortion plane

def rd_figure(pair: Pair, height: int = 460, font: int = 13) -> dict:
    """Both runs on the R–D plane (`rd_plane.rd_plane`, Alemi et al. 2018, a Vega-Lite spec), each point named by
    its role (the legend gives its settings), one dotted line of equal −ELBO through each, and the distortion of a
    decoder that ignores z drawn as a dashed line however far it lies (the plane stretches to it): a run that
    collapses entirely lands on it at R = 0."""
    evals = [side.evaluation for side in pair.sides]
    return rd_plane.rd_plane(evals, pair.collapsed_distortion, height, stretch=True, font=font,
                             names=[side.role for side in pair.sides],
                             legend=[f"{side.role}: {side.label}" for side in pair.sides],
                             levels=[e["rate"] + e["distortion"] for e in evals])


# ---------------------------------------------------------------- captions: two sentences each, with the numbers

def _fmt_dims(n: int) -> str:
    return f"{n} dimension{'' if n == 1 else 's'}"


def replay_caption(pair: Pair) -> str:
    c, k = pair.collapsed.replay, pair.cured.replay
    d = pair.latent_dim
    c0, cn = moment(c, int(c.epochs[0])), moment(c, int(c.epochs[-1]))
    k0, kn = moment(k, int(k.epochs[0])), moment(k, int(k.epochs[-1]))
    lam = pair.cured.objective.free_bits
    floor = f", each dimension's KL held up near the dashed floor λ = {lam:g}" if lam > 0 else ""
    lattice = (" — the map and the decoder lattice show what the remaining ones carry" if c.lattice is not None
               else " — the map shows what the remaining ones carry")
    return (f"Left, {pair.collapsed.label} alone ({pair.demo.cause}): from epoch {c0.epoch} to {cn.epoch} its active "
            f"units go {c0.active_units} → {cn.active_units} of {d} and its rate {c0.rate:.2f} → {cn.rate:.2f} nats, "
            f"{_fmt_dims(len(cn.at_prior))} ending under {KL_COLLAPSED:g} nats (grey bars): there q(z_j|x) is the "
            f"prior N(0, 1) for every image, so those coordinates tell the decoder nothing{lattice}. "
            f"Right, the same run with {pair.cured.label}: {k0.active_units} → "
            f"{kn.active_units} of {d} units active and rate {k0.rate:.2f} → {kn.rate:.2f} nats{floor}.")


def pictures_caption(pair: Pair) -> str:
    c, k = pair.collapsed.evaluation, pair.cured.evaluation
    gain = c["distortion"] - k["distortion"]
    if pair.spec.autoregressive:
        first = ("Each column is a test image (top row) and, under it, images the PixelCNN generates from z alone at "
                 "z = μ(x) and at draws z ~ q(z|x); beside them, samples from the prior.")
        second = (f"With R = {c['rate']:.2f} nats of code the collapsed run's rows are generic garments whatever the "
                  f"input — its decoder ignores z — while the cured one, R = {k['rate']:.2f} nats, gives back the "
                  "input's kind of garment.")
    else:
        first = ("Each column is a test image (top row) over its reconstruction from z = μ(x); beside them, images "
                 "decoded from prior samples z ~ N(0, I), for the final model of each run.")
        if gain > 1.0:
            second = (f"The cured run's {k['rate']:.2f} nats of code (against {c['rate']:.2f}) buy reconstructions "
                      f"{gain:.1f} nats better (D = {k['distortion']:.2f} vs {c['distortion']:.2f}).")
        else:
            second = (f"They look alike (D = {c['distortion']:.2f} vs {k['distortion']:.2f} nats): β still prices each "
                      f"nat of code, so free bits does not buy a sharper picture but spreads the code over every "
                      f"dimension — R = {k['rate']:.2f} nats in {k['active_units']} active units against "
                      f"{c['rate']:.2f} in {c['active_units']}.")
    return f"{first} {second}"


def rd_caption(pair: Pair) -> str:
    c, k = pair.collapsed.evaluation, pair.cured.evaluation
    line = pair.collapsed_distortion
    first = ("Each run sits at its rate R, the nats of code per test image, and distortion D, the nats still needed "
             "to describe the image given the code; −ELBO = R + D, so down-left is better and the dotted lines are "
             "equal −ELBO (Alemi et al. 2018).")
    where = (f"collapsed at R = {c['rate']:.2f}, D = {c['distortion']:.2f} (−ELBO {c['rate'] + c['distortion']:.2f}); "
             f"cured at R = {k['rate']:.2f}, D = {k['distortion']:.2f} (−ELBO {k['rate'] + k['distortion']:.2f})")
    if line is None:
        return f"{first} Here: {where}."
    below = " — a PixelCNN models the pixels jointly, so it goes below the line even with no code" \
        if pair.spec.autoregressive else ""
    lower = ("; the collapsed run has the lower −ELBO — collapse is what the objective asks for, not a failure to "
             "optimise it" if c["rate"] + c["distortion"] < k["rate"] + k["distortion"] else "")
    return (f"{first} The dashed line D = {line:.2f} is a decoder that ignores z, where a run that collapses entirely "
            f"lands at R = 0{below}; here: {where}{lower}.")


def captions(pair: Pair) -> dict[str, str]:
    return {"replay": replay_caption(pair), "pictures": pictures_caption(pair), "rd": rd_caption(pair)}


# ---------------------------------------------------------------- train it live

def live_spec(pair: Pair, epochs: int | None = None) -> SweepSpec:
    """The sweep that trains the demo's two runs again (same data, model, seed and settings; `epochs` to change
    their length): exactly the collapsed run's and the cured run's objectives, so its runs keep the shipped names."""
    objectives = {side.objective for side in pair.sides}
    betas = tuple(sorted({o.beta for o in objectives}))
    free_bits = tuple(sorted({o.free_bits for o in objectives}))
    warmups = tuple(sorted({o.warmup_epochs for o in objectives}))
    n = pair.spec.epochs if epochs is None else int(epochs)
    if not 1 <= n <= MAX_DEMO_EPOCHS:
        raise ValueError(f"epochs must lie in [1, {MAX_DEMO_EPOCHS}], not {n}")
    spec = dataclasses.replace(pair.spec, betas=betas, free_bits=free_bits, warmups=warmups, cycles=(),
                               capacities=(), kl_targets=(), aggressive=False, epochs=n)
    if {o for o in spec.settings()} != objectives:
        raise DemoError("the demo's two runs differ in more than β, free bits and warm-up")
    return spec


def live_folder_name(demo: Demo, owner: str) -> str:
    """A visitor's own sweep folder for the demo trained live (a safe name: letters, digits, '-')."""
    tag = "".join(ch for ch in str(owner) if ch.isalnum())[:12] or "server"
    return f"demo-{demo.key}-{tag}"
