"""A training replay (`replay.Replay`) as pictures: one Plotly figure whose epoch slider and play button move the
latent scatter (with posterior ellipses), the decoder lattice and the KL-per-dimension bars together, in the
browser without a round trip per frame; and the same frames as an animated GIF."""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw
from plotly.subplots import make_subplots

from . import pictures
from .pictures import PALETTE
from .plots import covariance_ellipse, layout
from .replay import Replay, frame_indices

ELLIPSES = 8  # probe images drawn with their ±2σ posterior ellipse
SHOWN = 1000  # probe images on the scatter


def _ellipse(mean: np.ndarray, cov3: np.ndarray, points: int = 40) -> np.ndarray:
    """The ±2σ contour (points+1, 2) of N(mean, [[a, b], [b, c]]), from a replay's (a, b, c)."""
    a, b, c = (float(v) for v in cov3)
    return covariance_ellipse(mean, np.array([[a, b], [b, c]]), 2.0, points)


def map_limit(rp: Replay, shown: np.ndarray | None = None) -> float:
    """Half-width of the square map (both axes run ±limit) that holds, at every recorded epoch, the posterior means
    of the `shown` probe images and the whole ±2σ ellipse of each one drawn with it (the first `ELLIPSES`): the
    ellipse of N(m, [[a, b], [b, c]]) reaches m ± 2(√a, √c), its bounding box. Means alone can sit within ±0.2
    while a collapsing dimension's ellipses swell to the prior's ±2; the caption describes those ellipses, so
    they must be on screen. A tenth is added as a margin."""
    shown = np.arange(min(SHOWN, len(rp.probe_ids))) if shown is None else np.asarray(shown)
    reach = float(np.abs(rp.means[:, shown]).max()) if len(shown) else 0.0
    ringed = shown[:ELLIPSES]
    if len(ringed):
        half = 2.0 * np.sqrt(np.clip(rp.cov[:, ringed][..., [0, 2]].astype(np.float64), 0.0, None))  # (E, k, 2)
        reach = max(reach, float((np.abs(rp.means[:, ringed]) + half).max()))
    return reach * 1.1 or 1.0


def _png_uri(picture: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(pictures.png_bytes(picture)).decode()


# the class colours as a discrete colour scale over class indices: a numeric colour array is validated by Plotly as
# one array, a list of colour names one name at a time (most of a replay figure's time when it was one)
_CLASS_SCALE = [[(k + d) / len(PALETTE), c] for k, c in enumerate(PALETTE) for d in (0, 1)]  # class k: PALETTE[k]


def _marker(rp: Replay, shown: np.ndarray) -> dict:
    """The scatter's markers: grey, or coloured by class."""
    if rp.labels is None:
        return dict(size=4, color="#888", opacity=0.6)
    return dict(size=4, color=rp.labels[shown].astype(np.int64) % len(PALETTE), colorscale=_CLASS_SCALE,
                cmin=-0.5, cmax=len(PALETTE) - 0.5, opacity=0.6)


def _frame_traces(rp: Replay, e: int, shown: np.ndarray, marker: dict) -> list:
    """The traces of epoch index `e`, in a fixed order (frames replace traces by position)."""
    xy = rp.means[e, shown]  # (S, 2)
    traces = [go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", marker=marker, hoverinfo="skip", showlegend=False)]
    gap = np.full((1, 2), np.nan)  # a break between two ellipses of one line trace (drawn as a gap)
    rings = [part for i in range(min(ELLIPSES, len(shown)))
             for part in (_ellipse(rp.means[e, shown[i]], rp.cov[e, shown[i]]), gap)]
    ring = np.concatenate(rings) if rings else np.empty((0, 2))  # (ELLIPSES · 42, 2)
    traces.append(go.Scatter(x=ring[:, 0], y=ring[:, 1], mode="lines", line=dict(color="#d62728", width=1),
                             hoverinfo="skip", showlegend=False))
    kl = rp.kl_per_dim[e]
    traces.append(go.Bar(x=np.arange(len(kl)), y=kl, marker_color="#1f77b4", showlegend=False,
                         hovertemplate="dimension %{x}: %{y:.2f} nats<extra></extra>"))
    if rp.lattice is not None:
        traces.append(go.Image(source=_png_uri(rp.lattice[e]), hoverinfo="skip"))
    return traces


def replay_figure(rp: Replay, height: int = 460) -> go.Figure:
    """Scatter of the probe's posterior means (colour = class) with ±2σ ellipses of a few, the decoder lattice and
    the KL per dimension, one frame per recorded epoch (at most `replay.MAX_FRAMES`), with a slider (the scrubber)
    and play / pause buttons."""
    with_lattice = rp.lattice is not None
    cols = 3 if with_lattice else 2
    fig = make_subplots(rows=1, cols=cols, column_widths=[0.4, 0.3, 0.3] if with_lattice else [0.55, 0.45],
                        subplot_titles=["means, ±2σ ellipses"]  # short: three titles side by side on a phone
                        + (["decoder, ±2σ grid"] if with_lattice else []) + ["KL per dim (nats)"],
                        specs=[[{"type": "xy"}] * cols], horizontal_spacing=0.06)
    shown = np.arange(min(SHOWN, len(rp.probe_ids)))
    marker = _marker(rp, shown)
    cells = [(1, 1), (1, 1), (1, cols)] + ([(1, 2)] if with_lattice else [])
    for trace, (r, c) in zip(_frame_traces(rp, 0, shown, marker), cells):
        fig.add_trace(trace, row=r, col=c)
    frames = frame_indices(rp.n_epochs)
    fig.frames = [go.Frame(data=_frame_traces(rp, e, shown, marker), name=str(int(rp.epochs[e])),
                           layout=go.Layout(annotations=fig.layout.annotations[:cols] + (_caption(rp, e),)))
                  for e in frames]
    lim = map_limit(rp, shown)  # the means and the drawn ellipses, at every epoch
    kl_max = float(rp.kl_per_dim.max()) * 1.1 or 1.0
    layout(fig, None, height, top=90)
    fig.update_xaxes(range=[-lim, lim], title=rp.axes[0], row=1, col=1)
    fig.update_yaxes(range=[-lim, lim], title=rp.axes[1], scaleanchor="x", row=1, col=1)
    fig.update_xaxes(title="latent dimension", row=1, col=cols)
    fig.update_yaxes(range=[0, kl_max], row=1, col=cols)
    if with_lattice:
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
    fig.add_annotation(_caption(rp, 0))
    play = dict(frame=dict(duration=400, redraw=True), transition=dict(duration=0), fromcurrent=True, mode="immediate")
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="left", x=0, y=-0.25, xanchor="left", yanchor="top",
                          buttons=[dict(label="▶ play", method="animate", args=[None, play]),
                                   dict(label="❚❚ pause", method="animate",
                                        args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])],
        sliders=[dict(active=0, x=0.16, len=0.84, y=-0.2, yanchor="top", currentvalue=dict(visible=False),
                      steps=[dict(label=str(int(ep)), method="animate",
                                  args=[[str(int(ep))], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                             transition=dict(duration=0))])
                             for ep in rp.epochs[frames]])],
        margin=dict(b=130))
    return fig


def _caption(rp: Replay, e: int) -> dict:
    return dict(text=f"epoch {int(rp.epochs[e])} · rate {float(rp.kl_per_dim[e].sum()):.2f} nats · active units "
                     f"{int(rp.active_units[e])} of {rp.kl_per_dim.shape[1]} · I(x;z) {float(rp.mutual_info[e]):.2f}",
                x=0, y=1.22, xref="paper", yref="paper", xanchor="left", showarrow=False, font=dict(size=13))


def replay_gif(rp: Replay, size: int = 240, frame_ms: int = 400) -> bytes:
    """The replay as an animated GIF: per epoch, the scatter (with the ellipses), the lattice and the KL bars side
    by side, with the epoch and the rate written above; the last frame is held a little longer."""
    shown = np.arange(min(SHOWN, len(rp.probe_ids)))
    lim = map_limit(rp, shown)  # the means and the drawn ellipses, at every epoch
    kl_max = float(rp.kl_per_dim.max()) * 1.1 or 1.0
    rgb = [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in PALETTE]
    frames = []
    for e in frame_indices(rp.n_epochs):
        panels = [_scatter_panel(rp, e, shown, lim, size, rgb)]
        if rp.lattice is not None:
            lat = Image.fromarray(rp.lattice[e]).convert("RGB").resize((size, size), Image.NEAREST)
            panels.append(lat)
        panels.append(_bars_panel(rp.kl_per_dim[e], kl_max, size))
        frame = Image.new("RGB", (len(panels) * (size + 8) + 8, size + 30), "white")
        for i, panel in enumerate(panels):
            frame.paste(panel, (8 + i * (size + 8), 24))
        ImageDraw.Draw(frame).text((8, 6), f"epoch {int(rp.epochs[e])}   rate {float(rp.kl_per_dim[e].sum()):.2f} "
                                   f"nats   active units {int(rp.active_units[e])}", fill=(0, 0, 0))
        frames.append(frame.quantize(colors=64))
    out = io.BytesIO()
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 4]
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return out.getvalue()


def _scatter_panel(rp: Replay, e: int, shown: np.ndarray, lim: float, size: int, rgb: list) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    to_px = lambda xy: ((xy[..., 0] / lim + 1) * size / 2, (1 - xy[..., 1] / lim) * size / 2)  # noqa: E731
    px, py = to_px(rp.means[e, shown])
    for i, (x, y) in enumerate(zip(px, py)):
        colour = (136, 136, 136) if rp.labels is None else rgb[int(rp.labels[shown[i]]) % len(rgb)]
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)
    for i in range(min(ELLIPSES, len(shown))):
        ring = _ellipse(rp.means[e, shown[i]], rp.cov[e, shown[i]])
        rx, ry = to_px(ring)
        draw.line(list(zip(rx, ry)), fill=(214, 39, 40), width=1)
    draw.rectangle([0, 0, size - 1, size - 1], outline=(200, 200, 200))
    return img


def _bars_panel(kl: np.ndarray, kl_max: float, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    width = size / max(1, len(kl))
    for j, v in enumerate(kl):
        top = size - 1 - (size - 12) * float(v) / kl_max
        draw.rectangle([j * width + 1, top, (j + 1) * width - 1, size - 1], fill=(31, 119, 180))
    draw.text((4, 2), f"KL per dim (max {kl_max / 1.1:.2f})", fill=(0, 0, 0))
    return img
