"""Figures of the posterior-collapse lab: the rate–distortion plane, KL per dimension across runs and over
epochs. Plotly `go.Figure` builders, testable without Streamlit. Inputs are sweep evaluations (dicts with
beta, free_bits, warmup, rate, distortion, test_elbo, kl_per_dim…) in nats per image."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .pictures import PALETTE
from .plots import layout


def run_label(ev: dict) -> str:
    return f"β={ev['beta']:g}, λ={ev['free_bits']:g}, warm-up={ev['warmup']:g}"


def _families(evals: list[dict]) -> dict[tuple, list[int]]:
    """Runs that differ only in β, as index lists sorted by β: the curves joined on the R–D plane."""
    fam: dict[tuple, list[int]] = {}
    for i, ev in enumerate(evals):
        fam.setdefault((ev["free_bits"], ev["warmup"]), []).append(i)
    return {k: sorted(v, key=lambda i: evals[i]["beta"]) for k, v in fam.items()}


def rd_plane(evals: list[dict], height: int = 520) -> go.Figure:
    """Each run at (rate R, distortion D) (Alemi et al. 2018). Dotted diagonals are lines of equal
    −ELBO = R + D: a run further down-left has the better ELBO; moving along a line trades rate for distortion
    at equal ELBO. Runs with the same λ and warm-up are joined in order of β."""
    rates = np.array([e["rate"] for e in evals], float)
    dists = np.array([e["distortion"] for e in evals], float)
    fig = go.Figure()
    r_max = max(1.0, float(rates.max()) * 1.15)
    d_lo, d_hi = float(dists.min()), float(dists.max())
    pad = max(1.0, 0.1 * (d_hi - d_lo))
    d_lo, d_hi = d_lo - pad, d_hi + pad
    totals = rates + dists
    for level in np.linspace(totals.min(), totals.max(), 5) if len(evals) > 1 else totals:
        fig.add_trace(go.Scatter(x=[0, r_max], y=[level, level - r_max], mode="lines", hoverinfo="skip",
                                 line=dict(color="#bbb", dash="dot", width=1), showlegend=False))
        x_bottom = level - d_lo  # where the line leaves the plot at the bottom: labels spread along the x axis
        x_label, y_label = (x_bottom, d_lo) if x_bottom <= r_max else (r_max, level - r_max)
        fig.add_annotation(x=x_label, y=y_label, text=f"{level:.1f}", showarrow=False, xanchor="right",
                           yanchor="bottom", font=dict(size=10, color="#999"))
    for n, ((fb, wu), idx) in enumerate(sorted(_families(evals).items())):
        colour = PALETTE[n % len(PALETTE)]
        hover = [f"{run_label(evals[i])}<br>rate {rates[i]:.2f} nats<br>distortion {dists[i]:.2f} nats<br>"
                 f"−ELBO {totals[i]:.2f}<br>active units {evals[i].get('active_units', '—')}" for i in idx]
        fig.add_trace(go.Scatter(x=rates[idx], y=dists[idx], mode="lines+markers+text", name=f"λ={fb:g}, warm-up={wu:g}",
                                 text=[f"β={evals[i]['beta']:g}" for i in idx], textposition=["middle right" if rates[i] < 0.15 * r_max else "middle left" for i in idx],
                                 textfont=dict(size=10, color=colour),
                                 hovertext=hover, hoverinfo="text", marker=dict(size=10, color=colour),
                                 line=dict(color=colour), customdata=idx))
    layout(fig, None, height, top=30)
    fig.update_layout(xaxis=dict(title="rate R = KL(q(z|x) ‖ p(z)) [nats]", range=[-0.02 * r_max, r_max]),
                      yaxis=dict(title="distortion D = −log p(x|z) [nats]", range=[d_lo, d_hi]),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"),
                      annotations=list(fig.layout.annotations) + [dict(
                          x=1, y=1, xref="paper", yref="paper", xanchor="right", yanchor="top", showarrow=False,
                          text="dotted: equal −ELBO", font=dict(size=10, color="#999"))])
    return fig


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
