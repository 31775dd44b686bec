"""Figures of the posterior-collapse lab: KL per dimension across runs and over epochs, and each run's rate
split into I(x;z) and the marginal KL (the rate–distortion plane: `rd_plane`). Plotly `go.Figure` builders,
testable without Streamlit. Inputs are sweep evaluations (dicts with beta, free_bits, warmup, rate, distortion,
test_elbo, kl_per_dim, mutual_info, marginal_kl…) in nats per image."""
from __future__ import annotations

import dataclasses

import numpy as np
import plotly.graph_objects as go

from .config import ObjectiveConfig
from .pictures import PALETTE
from .plots import layout


def objective_of(ev: dict) -> ObjectiveConfig:
    """The objective a sweep run was trained with (manifests before the cures' fields name only β, λ, warm-up)."""
    if "objective" in ev:
        return ObjectiveConfig.from_dict(ev["objective"])
    return ObjectiveConfig(beta=ev["beta"], free_bits=ev["free_bits"], warmup_epochs=ev["warmup"])


def run_label(ev: dict) -> str:
    label = objective_of(ev).label
    return label if ev.get("sigma2") is None else f"σ²={ev['sigma2']:g}, {label}"  # a pPCA sweep's run


def _family(ev: dict) -> str:
    """What a run is apart from its β: runs with the same family are joined on the R–D plane."""
    obj = objective_of(ev)
    if ev.get("sigma2") is not None:
        return f"σ²={ev['sigma2']:g}"
    if obj.capacity > 0:
        return obj.label
    return dataclasses.replace(obj, beta=1.0).label.removeprefix("β=1").lstrip(", ") or "β-VAE"


def point_label(ev: dict) -> str:
    obj = objective_of(ev)
    return f"C={obj.capacity:g}" if obj.capacity > 0 else f"β={obj.beta:g}"


def families(evals: list[dict]) -> dict[str, list[int]]:
    """Runs that differ only in β, as index lists sorted by β: the curves joined on the R–D plane."""
    fam: dict[str, list[int]] = {}
    for i, ev in enumerate(evals):
        fam.setdefault(_family(ev), []).append(i)
    return {k: sorted(v, key=lambda i: evals[i]["beta"]) for k, v in fam.items()}


def most_instructive(histories: list[list[dict]], evals: list[dict]) -> int:
    """The run to show first: the one whose active units fall most over training (first epoch against last, from
    its history), the collapse happening before the eyes; when none falls, the one with fewest active units."""
    falls = [h[0]["active_units"] - h[-1]["active_units"] if h and "active_units" in h[0] and "active_units" in h[-1]
             else 0 for h in histories]
    if max(falls) > 0:
        return falls.index(max(falls))
    units = [e["active_units"] for e in evals]
    return units.index(min(units))


def kl_heatmap(evals: list[dict], height: int | None = None) -> go.Figure:
    """Runs × latent dimensions, coloured by each dimension's KL in nats: a collapsed dimension is dark."""
    z = np.array([e["kl_per_dim"] for e in evals], float)  # (runs, d)
    names = [run_label(e) for e in evals]
    fig = go.Figure(go.Heatmap(z=z, x=[f"z{j}" for j in range(z.shape[1])], y=names, colorscale="Viridis",
                               colorbar=dict(title="KL [nats]"), zmin=0,
                               hovertemplate="%{y}<br>%{x}: KL %{z:.3f} nats<extra></extra>"))
    layout(fig, None, height or 120 + 28 * len(evals))
    fig.update_layout(yaxis=dict(autorange="reversed"))
    return fig


def elbo_surgery_bars(evals: list[dict], n_images: int, height: int | None = None) -> go.Figure:
    """Each run's rate split as E KL(q(z|x) ‖ p(z)) = I(x;z) + KL(q(z) ‖ p(z)) (Hoffman & Johnson 2016, "ELBO
    surgery"): the two parts stacked, the rate R marked by a tick (the stack is its Monte Carlo estimate, so it ends
    near the tick), and the dashed line log N, the most I(x;z) can be when q(z) mixes the posteriors of N
    test images. Runs evaluated before the split was recorded have no marginal-KL part."""
    names = [run_label(e) for e in evals]
    fig = go.Figure()
    for key, name, colour in (("mutual_info", "I(x;z)", PALETTE[0]), ("marginal_kl", "KL(q(z) ‖ p(z))", PALETTE[1])):
        fig.add_trace(go.Bar(x=[e.get(key) for e in evals], y=names, orientation="h", name=name, marker_color=colour,
                             hovertemplate=f"%{{y}}<br>{name}: %{{x:.2f}} nats<extra></extra>"))
    fig.add_trace(go.Scatter(x=[e["rate"] for e in evals], y=names, mode="markers", name="rate R",
                             marker=dict(symbol="line-ns-open", size=18, color="black", line=dict(width=2)),
                             hovertemplate="%{y}<br>rate R: %{x:.2f} nats<extra></extra>"))
    ceiling = float(np.log(n_images))
    fig.add_vline(x=ceiling, line=dict(color="#555", dash="dash", width=1.5), annotation_text=f"log N = {ceiling:.2f}",
                  annotation_position="bottom right", annotation_font=dict(size=10, color="#555"))
    layout(fig, None, height or 140 + 28 * len(evals), top=30)
    fig.update_layout(barmode="relative", xaxis_title="nats per test image", yaxis=dict(autorange="reversed"),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return fig


def kl_timeline(history: list[dict], free_bits: float = 0.0, height: int = 380) -> go.Figure:
    """KL of each latent dimension on the test set after every epoch: collapse shows as lines falling to 0."""
    epochs = [r["epoch"] for r in history]
    kl = np.array([r["kl_per_dim"] for r in history], float)  # (epochs, d)
    fig = go.Figure()
    for j in range(kl.shape[1]):
        fig.add_trace(go.Scatter(x=epochs, y=kl[:, j], mode="lines", name=f"z{j}",
                                 hovertemplate=f"z{j}, epoch %{{x}}: %{{y:.3f}} nats<extra></extra>"))
    if free_bits > 0:
        fig.add_hline(y=free_bits, line=dict(color="black", dash="dash"), annotation_text=f"λ = {free_bits:g}")
    layout(fig, None, height)
    fig.update_layout(xaxis_title="epoch", yaxis_title="KL per dimension [nats]", showlegend=kl.shape[1] <= 16)
    return fig


def ppca_spectrum(eigenvalues: np.ndarray, sigma2s: list[float], latent_dim: int, height: int = 380) -> go.Figure:
    """The `latent_dim` largest eigenvalues λᵢ of the data covariance (log scale) with one dashed line per noise
    variance σ²: at the linear VAE's optimum exactly the latents whose λᵢ lie above the line are active (Tipping &
    Bishop 1999; Lucas et al. 2019); the legend names each line with that count."""
    lam = np.sort(np.asarray(eigenvalues, float))[::-1][:latent_dim]
    fig = go.Figure(go.Bar(x=np.arange(1, len(lam) + 1), y=lam, marker_color="#1f77b4", showlegend=False,
                           hovertemplate="λ<sub>%{x}</sub> = %{y:.4f}<extra></extra>"))
    for n, s2 in enumerate(sigma2s):
        colour = PALETTE[(n + 1) % len(PALETTE)]
        active = int((lam > s2).sum())
        fig.add_trace(go.Scatter(x=[0.5, len(lam) + 0.5], y=[s2, s2], mode="lines", hoverinfo="skip",
                                 line=dict(color=colour, dash="dash"), name=f"σ² = {s2:g}: {active} active"))
    layout(fig, None, height, top=30)
    fig.update_layout(xaxis=dict(title="eigenvalue rank i"), yaxis=dict(title="λᵢ (pixel variance)", type="log"),
                      bargap=0.1, legend=dict(orientation="h", y=1.0, yanchor="bottom"))  # names beside no line
    return fig
