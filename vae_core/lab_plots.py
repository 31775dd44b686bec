"""Figures of the posterior-collapse lab: the rate–distortion plane, KL per dimension across runs and over
epochs, and each run's rate split into I(x;z) and the marginal KL. Plotly `go.Figure` builders, testable without
Streamlit. Inputs are sweep evaluations (dicts with beta, free_bits, warmup, rate, distortion, test_elbo,
kl_per_dim, mutual_info, marginal_kl…) in nats per image."""
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


def _point_label(ev: dict) -> str:
    obj = objective_of(ev)
    return f"C={obj.capacity:g}" if obj.capacity > 0 else f"β={obj.beta:g}"


def _families(evals: list[dict]) -> dict[str, list[int]]:
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


# Where a label goes beside its point (Plotly's textposition): first to the right, then around it.
_SIDES = ("middle right", "middle left", "top center", "bottom center", "top right", "bottom right", "top left",
          "bottom left")
LABEL_WIDTHS = (380, 1000)  # the plane's width in px on a 420-px phone and beside the sidebar on a 1400-px screen
_AXES = dict(l=70, r=10, b=55)  # px outside the plot area (its margins plus the axes' ticks and titles)
_FONT = 10  # px, every label on the plane
_RADIUS = 5  # px, a point's marker (size 10)
_GAP = _RADIUS / 0.8 + 1  # px from a point's centre to its label, as Plotly places a textposition


def text_box(cx: float, cy: float, text: str, position: str, size: float, gap: float) -> tuple[float, ...]:
    """(x0, y0, x1, y1) in px (y down) of `text` at `position` (Plotly's textposition) beside a point at (cx, cy),
    `gap` px from its centre: about 0.6 × the font size per character, 1.25 × it high."""
    w, h = 0.6 * size * len(text), 1.25 * size
    x0 = cx + gap if "right" in position else cx - gap - w if "left" in position else cx - w / 2
    y0 = cy - gap - h if "top" in position else cy + gap if "bottom" in position else cy - h / 2
    return x0, y0, x0 + w, y0 + h


def plot_area(fig: go.Figure, width: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in px of the plot area of `fig` drawn `width` px wide."""
    return _AXES["l"], fig.layout.margin.t, width - _AXES["r"], fig.layout.height - _AXES["b"]


def to_px(fig: go.Figure, width: int, x: float, y: float) -> tuple[float, float]:
    """Data coordinates → px (y down) on `fig` drawn `width` px wide."""
    left, top, right, bottom = plot_area(fig, width)
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    return left + (x - x0) / (x1 - x0) * (right - left), top + (y1 - y) / (y1 - y0) * (bottom - top)


def _overlaps(a, b, pad: float = 2.0) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _place_labels(fig: go.Figure, points: list[tuple[float, float, str]], fixed: list) -> list[str | None]:
    """A textposition for each point's label, or None where every side would cover another label, a point or the
    plot's edge at one of `LABEL_WIDTHS` (the label is then left out: the point's hover names it). Greedy: the
    points with the fewest neighbours first, so that crowds (collapsed runs at R ≈ 0) lose labels, not the rest.
    `fixed`: functions width → box of labels already drawn."""
    px = {w: [to_px(fig, w, x, y) for x, y, _ in points] for w in LABEL_WIDTHS}
    markers = {w: [(cx - _RADIUS, cy - _RADIUS, cx + _RADIUS, cy + _RADIUS) for cx, cy in px[w]] for w in LABEL_WIDTHS}
    taken = {w: [f(w) for f in fixed] for w in LABEL_WIDTHS}
    narrow = px[LABEL_WIDTHS[0]]
    crowd = [sum(abs(ax - bx) < 40 and abs(ay - by) < 20 for bx, by in narrow) for ax, ay in narrow]
    positions: list[str | None] = [None] * len(points)
    for i in sorted(range(len(points)), key=lambda i: crowd[i]):
        for side in _SIDES:
            boxes = {w: text_box(*px[w][i], points[i][2], side, _FONT, _GAP) for w in LABEL_WIDTHS}
            if all(_inside(b, plot_area(fig, w)) and not any(_overlaps(b, t) for t in taken[w])
                   and not any(_overlaps(b, m, 0) for m in markers[w]) for w, b in boxes.items()):
                positions[i] = side
                for w in LABEL_WIDTHS:
                    taken[w].append(boxes[w])
                break
    return positions


def _inside(box, area) -> bool:
    return area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]


def rd_plane(evals: list[dict], collapsed_distortion: float | None = None, height: int = 520) -> go.Figure:
    """Each run at (rate R, distortion D) (Alemi et al. 2018). Dotted diagonals are lines of equal
    −ELBO = R + D: a run further down-left has the better ELBO; moving along a line trades rate for distortion
    at equal ELBO. Runs with the same λ and warm-up are joined in order of β. `collapsed_distortion` (a
    Bernoulli sweep's `sweep.collapsed_distortion`) is drawn as a dashed horizontal line: the distortion of a
    decoder that ignores z, where a factorised decoder's run with R = 0 lands. When it lies further from the runs
    than their own spread of D (a PixelCNN decoder's runs lie far below it), it is named at the plot's edge
    instead, so that the runs keep their scale. Each point is named by its β (or C) where the name fits without
    touching another label or point, on a phone as on a wide screen (`LABEL_WIDTHS`); the legend names the
    families, the hover every run."""
    rates = np.array([e["rate"] for e in evals], float)
    dists = np.array([e["distortion"] for e in evals], float)
    fig = go.Figure()
    r_max = max(1.0, float(rates.max()) * 1.15)
    d_lo, d_hi = float(dists.min()), float(dists.max())
    spread = max(1.0, d_hi - d_lo)
    line_shown = collapsed_distortion is not None and d_lo - spread <= collapsed_distortion <= d_hi + spread
    if line_shown:
        d_lo, d_hi = min(d_lo, collapsed_distortion), max(d_hi, collapsed_distortion)
    pad = max(1.0, 0.1 * (d_hi - d_lo))
    d_lo, d_hi = d_lo - pad, d_hi + pad
    families = _families(evals)
    # the legend's rows on a phone (about 40 px per entry plus its name) sit above the plot, in its top margin
    legend_px = sum(40 + 0.6 * 12 * len(name) for name in families)
    rows = int(np.ceil(legend_px / (LABEL_WIDTHS[0] - 20)))
    layout(fig, None, height, top=10 + 22 * rows)
    fig.update_layout(xaxis=dict(title="rate R = KL(q(z|x) ‖ p(z)) [nats]", range=[-0.02 * r_max, r_max]),
                      yaxis=dict(title="distortion D = −log p(x|z) [nats]", range=[d_lo, d_hi]),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom"))
    fixed = []  # the plot's own notes, as functions width → box, placed before the points' labels

    def note(text: str, x: float, y: float, xanchor: str, yanchor: str, paper: bool = False) -> None:
        def box(w):
            left, top, right, bottom = plot_area(fig, w)
            cx, cy = (left + x * (right - left), bottom - y * (bottom - top)) if paper else to_px(fig, w, x, y)
            tw, th = 0.6 * _FONT * len(text), 1.25 * _FONT
            x0 = cx - tw if xanchor == "right" else cx
            y0 = cy - th if yanchor == "bottom" else cy
            return x0, y0, x0 + tw, y0 + th
        if not any(_overlaps(box(w), f(w)) for w in LABEL_WIDTHS for f in fixed):
            fixed.append(box)
            fig.add_annotation(x=x, y=y, text=text, showarrow=False, xanchor=xanchor, yanchor=yanchor,
                               xref="paper" if paper else "x", yref="paper" if paper else "y",
                               font=dict(size=_FONT, color="#555" if paper or y == collapsed_distortion else "#999"))

    if line_shown:
        fig.add_hline(y=collapsed_distortion, line=dict(color="#555", dash="dash", width=1.5))
        note(f"decoder ignoring z: D = {collapsed_distortion:.2f}", r_max, collapsed_distortion, "right", "top")
    elif collapsed_distortion is not None:
        above = collapsed_distortion > d_hi
        note(f"{'↑' if above else '↓'} decoder ignoring z: D = {collapsed_distortion:.2f}, "
             f"{'above' if above else 'below'} the plot", 0, 1 if above else 0, "left", "top" if above else "bottom",
             paper=True)
    note("dotted: equal −ELBO", 1, 1, "right", "top", paper=True)
    totals = rates + dists
    for level in np.linspace(totals.min(), totals.max(), 5) if len(evals) > 1 else totals:
        fig.add_trace(go.Scatter(x=[0, r_max], y=[level, level - r_max], mode="lines", hoverinfo="skip",
                                 line=dict(color="#bbb", dash="dot", width=1), showlegend=False))
        x_bottom = level - d_lo  # where the line leaves the plot at the bottom: labels spread along the x axis
        x_label, y_label = (x_bottom, d_lo) if x_bottom <= r_max else (r_max, level - r_max)
        note(f"{level:.1f}", x_label, y_label, "right", "bottom")
    names = [_point_label(e) for e in evals]
    sides = _place_labels(fig, [(rates[i], dists[i], names[i]) for i in range(len(evals))], fixed)
    for n, (family, idx) in enumerate(families.items()):
        colour = PALETTE[n % len(PALETTE)]
        hover = [f"{run_label(evals[i])}<br>rate {rates[i]:.2f} nats<br>distortion {dists[i]:.2f} nats<br>"
                 f"−ELBO {totals[i]:.2f}<br>active units {evals[i].get('active_units', '—')}" for i in idx]
        fig.add_trace(go.Scatter(x=rates[idx], y=dists[idx], mode="lines+markers+text", name=family,
                                 text=[names[i] if sides[i] else "" for i in idx],
                                 textposition=[sides[i] or "middle right" for i in idx],
                                 textfont=dict(size=_FONT, color=colour),
                                 hovertext=hover, hoverinfo="text", marker=dict(size=10, color=colour),
                                 line=dict(color=colour), customdata=idx))
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
