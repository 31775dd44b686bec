"""Plotly figure builders for the app. Each returns a `go.Figure` and can be tested without Streamlit; all share
`layout` and the class palette (`pictures.PALETTE`)."""
from __future__ import annotations

import base64
import html

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .pictures import PALETTE, png_bytes

# Every figure's template, as Plotly's default: a new figure takes its default without validating it, where a
# template set on a figure is validated and copied anew (the live loss curves: built in 38 ms instead of 45).
pio.templates.default = "plotly_white"

# ---------------------------------------------------------------- Gaussian outlines drawn on the latent maps

def ellipse(center: np.ndarray, sigma: np.ndarray, n_sigma: float = 1.0, points: int = 60) -> np.ndarray:
    """Outline (points+1, 2) of the axis-aligned ellipse centre ± n_sigma·σ (a diagonal-Gaussian posterior)."""
    theta = np.linspace(0, 2 * np.pi, points + 1)
    c, s = np.asarray(center, float), np.asarray(sigma, float) * n_sigma
    return np.stack([c[0] + s[0] * np.cos(theta), c[1] + s[1] * np.sin(theta)], axis=1)


def covariance_ellipse(center: np.ndarray, cov: np.ndarray, n_sigma: float = 2.0, points: int = 60) -> np.ndarray:
    """Outline (points+1, 2) of the n_sigma contour of N(center, cov), cov (2, 2) at any angle: the axis-aligned
    `ellipse` on the eigenaxes of cov, turned onto them."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, float))
    return np.asarray(center, float) + ellipse(np.zeros(2), np.sqrt(np.clip(vals, 0, None)), n_sigma, points) @ vecs.T


def prior_circles(radii=(1.0, 2.0, 3.0), points: int = 120) -> list[tuple[float, np.ndarray]]:
    """The standard normal prior's density contours in 2-D are circles; radius r holds 1−exp(−r²/2) of the mass."""
    return [(float(r), ellipse(np.zeros(2), np.ones(2), r, points)) for r in radii]


def prior_mass_within(radius: float) -> float:
    return float(1 - np.exp(-radius**2 / 2))


# ---------------------------------------------------------------- figures

CURVE_LABELS = {"elbo": "−ELBO", "recon": "reconstruction −log p(x|z)", "kl": "KL(q(z|x) ‖ p(z))"}


def layout(fig: go.Figure, title: str | None = None, height: int = 450, top: int = 10) -> go.Figure:
    """The one look of every Plotly figure in the app: white template (the default, set above), tight margins, the
    class palette for discrete colours. `top` is the margin above the plot when there is no title (room for a
    legend)."""
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40 if title else top, b=10),
                      colorway=PALETTE)
    fig.for_each_trace(_colour_bar_title_beside)
    return fig


def _colour_bar_title_beside(trace) -> None:
    """A colour bar's title runs along the bar's right side, not above it, where Plotly's toolbar would cover it."""
    bar = trace.marker.colorbar if "marker" in trace and "colorbar" in trace.marker else \
        trace.colorbar if "colorbar" in trace else None
    if bar is not None and bar.title.text:
        bar.title.side = "right"


def _discrete_scale(n: int) -> list:
    """A stepped colour scale for integer labels 0…n−1 used as marker colours in a single trace."""
    if n <= 1:
        return [[0, PALETTE[0]], [1, PALETTE[0]]]
    scale = []
    for k in range(n):
        colour = PALETTE[k % len(PALETTE)]
        scale += [[k / n, colour], [(k + 1) / n, colour]]
    return scale


def latent_scatter(xy: np.ndarray, ids: np.ndarray, *, color: np.ndarray | None = None, color_name: str = "",
                   labels: np.ndarray | None = None, class_names=None, categorical: bool = False,
                   axis_titles=("z0", "z1"), title: str | None = None, prior: bool = False,
                   ellipses: list[tuple[int, np.ndarray, np.ndarray]] | None = None, equal_axes: bool = True,
                   height: int = 560, marks: list[dict] | None = None) -> go.Figure:
    """One WebGL scatter trace (trace 0) of the 2-D points with the global row id in customdata and the label
    name in text (both shown on hover); optional prior contours and posterior ellipses (index, μ, σ) on top.
    Numeric customdata and a plain list of strings keep 10,000 points fast to build and serialise.

    `marks`: more points drawn on top, one trace each (after the ellipses), given as dicts: "xy" (k, 2), "name"
    (legend and hover), optional "text" (k,) written beside the points, "colour", "symbol", "size", "edge" and
    "edge_width" (the marker's outline: a white edge keeps a mark visible among dense points), and "outline"
    (m, 2), a line in the same colour (e.g. a ±2σ contour, any shape)."""
    xy = np.asarray(xy, float)
    ids = np.asarray(ids).astype(np.int64)
    n = len(xy)
    if labels is not None:
        lab = np.asarray(labels).astype(int)
        k = int(lab.max()) + 1 if n else 0
        lookup = np.array([class_label(class_names, i) for i in range(k)], dtype=object)
        names = lookup[lab].tolist()
    else:
        names = ["—"] * n
    marker: dict = dict(size=4 if n > 3000 else 6, opacity=0.75)
    if color is not None:
        color = np.asarray(color)
        if categorical:
            k = int(color.max()) + 1 if len(color) else 1
            marker.update(color=color.astype(int), colorscale=_discrete_scale(k), cmin=-0.5, cmax=k - 0.5,
                          colorbar=dict(title="label", tickvals=list(range(k)),
                                        ticktext=[class_label(class_names, i) for i in range(k)]))
        else:
            marker.update(color=color.astype(float), colorscale="Viridis", colorbar=dict(title=color_name))
    hover = ("index %{customdata}<br>label %{text}<br>" + axis_titles[0] + " %{x:.3f}<br>"
             + axis_titles[1] + " %{y:.3f}")
    if color is not None and not categorical:
        hover += "<br>" + color_name + " %{marker.color:.2f}"
    fig = go.Figure(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", marker=marker, customdata=ids, text=names,
                                 hovertemplate=hover + "<extra></extra>", name="test images", showlegend=False))
    if prior:
        for r, outline in prior_circles():
            fig.add_trace(go.Scatter(x=outline[:, 0], y=outline[:, 1], mode="lines", hoverinfo="skip",
                                     line=dict(color="rgba(0,0,0,0.45)", dash="dot", width=1),
                                     name=f"prior {r:g}σ ({prior_mass_within(r):.0%})", showlegend=True))
    for k, (idx, mu, sigma) in enumerate(ellipses or []):
        outline = ellipse(mu, sigma, 2.0)
        fig.add_trace(go.Scatter(x=outline[:, 0], y=outline[:, 1], mode="lines", hoverinfo="skip",
                                 line=dict(color="crimson", width=1.5), name=f"q(z|x) ±2σ, #{idx}",
                                 showlegend=k == 0))
        fig.add_trace(go.Scatter(x=[mu[0]], y=[mu[1]], mode="markers+text", text=[f"#{idx}"],
                                 textposition="top right", marker=dict(color="crimson", size=7, symbol="x"),
                                 hoverinfo="skip", showlegend=False))
    for mark in marks or []:
        colour = mark.get("colour", "black")
        if mark.get("outline") is not None:
            outline = np.asarray(mark["outline"], float)
            fig.add_trace(go.Scatter(x=outline[:, 0], y=outline[:, 1], mode="lines", hoverinfo="skip",
                                     line=dict(color=colour, width=2), name=f"{mark['name']} ±2σ", showlegend=True))
        pts = np.atleast_2d(np.asarray(mark["xy"], float))
        text = mark.get("text")
        symbol = mark.get("symbol", "x")
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers+text" if text is not None else "markers",
                                 text=None if text is None else list(text), textposition="top right",
                                 textfont=dict(color=colour),
                                 marker=dict(color=colour, size=mark.get("size", 11), symbol=symbol,
                                             line=dict(color=mark.get("edge", colour),
                                                       width=mark.get("edge_width", 2))),
                                 name=mark["name"], hovertemplate=mark["name"] + "<extra></extra>", showlegend=True))
    fig.update_xaxes(title=axis_titles[0])
    fig.update_yaxes(title=axis_titles[1])
    if equal_axes:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(dragmode="select", legend=dict(orientation="h", y=-0.12))
    return layout(fig, title, height)


def loss_curves(history: list[dict], per_dim: bool = False, height: int = 520) -> go.Figure:
    """Per epoch, in three panels on one epoch axis: train/test −ELBO and reconstruction (nats per image); the rate,
    KL(q(z|x) ‖ p(z)), on its own axis — a KL of a few nats beside a reconstruction of hundreds would lie flat at
    zero on theirs — with each dimension's test KL when `per_dim`; and the active units (Burda et al. 2015)."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.42, 0.38, 0.2])
    epochs = [r["epoch"] for r in history]
    colours = {"elbo": PALETTE[0], "recon": PALETTE[2], "kl": PALETTE[3]}
    for row, parts in ((1, ("elbo", "recon")), (2, ("kl",))):
        for part in parts:
            for split, dash in (("test", "solid"), ("train", "dot")):
                key = f"{split}_{part}"
                if history and key in history[0]:
                    fig.add_trace(go.Scatter(x=epochs, y=[r[key] for r in history], mode="lines+markers",
                                             name=f"{split} {CURVE_LABELS[part]}",
                                             line=dict(color=colours[part], dash=dash)), row=row, col=1)
    if per_dim and history and "kl_per_dim" in history[0]:
        kl = np.array([r["kl_per_dim"] for r in history], float)  # (epochs, d)
        for j in range(kl.shape[1]):
            fig.add_trace(go.Scatter(x=epochs, y=kl[:, j], mode="lines", name="KL of each dimension", legendgroup="dims",
                                     showlegend=j == 0, line=dict(width=1, color="rgba(120,120,120,0.6)"),
                                     hovertemplate=f"z{j}, epoch %{{x}}: %{{y:.3f}} nats<extra></extra>"),
                          row=2, col=1)
    if history and "active_units" in history[0]:
        fig.add_trace(go.Scatter(x=epochs, y=[r["active_units"] for r in history], mode="lines+markers",
                                 name="active units", line=dict(color=PALETTE[4], shape="hv")), row=3, col=1)
        n_dims = len(history[0].get("kl_per_dim") or ()) or max(r["active_units"] for r in history)
        fig.update_yaxes(range=[-0.3, n_dims + 0.3], tickformat="d", row=3, col=1)
    fig.update_xaxes(title="epoch", tickformat="d", dtick=max(1, len(epochs) // 10), row=3, col=1)
    fig.update_yaxes(title="−ELBO, recon. [nats]", row=1, col=1)
    fig.update_yaxes(title="KL [nats]", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title="active units", row=3, col=1)
    return layout(fig, None, height)


def image_data_uri(picture: np.ndarray, scale: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture, scale)).decode()


def lattice_figure(picture: np.ndarray, axis_x: np.ndarray, axis_y: np.ndarray, cell: int, pad: int = 1,
                   density: np.ndarray | None = None, density_u: np.ndarray | None = None,
                   dims=(0, 1), scale: int = 1, height: int = 640,
                   targets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> go.Figure:
    """The tiled lattice as a picture with latent-value ticks at cell centres; optionally a contour of the
    aggregate posterior's density, given on fractional cell coordinates `density_u` (both axes), so that
    dense regions and holes can be compared with the decoded images.

    `targets` = (u, z_x, z_y): fractional cell positions (k,) along both axes and the latent values there. They
    become an invisible grid of k×k points (the last trace) carrying (z_x, z_y) in customdata: hovering shows the
    latent point under the mouse, and a click selects it (to decode it)."""
    h, w = picture.shape[:2]
    fig = go.Figure(go.Image(source=image_data_uri(picture, scale), x0=0, y0=0, dx=1 / scale, dy=1 / scale,
                             hoverinfo="skip"))
    step = cell + pad
    nx, ny = len(axis_x), len(axis_y)
    cx = np.arange(nx) * step + cell / 2 - 0.5
    cy = np.arange(ny) * step + cell / 2 - 0.5
    every_x, every_y = max(1, nx // 8), max(1, ny // 8)
    fig.update_xaxes(tickvals=cx[::every_x], ticktext=[f"{v:.2f}" for v in axis_x[::every_x]],
                     title=f"z{dims[0]}", showgrid=False, range=[-0.5, w - 0.5])
    ys = axis_y[::-1]  # row 0 is the largest y
    fig.update_yaxes(tickvals=cy[::every_y], ticktext=[f"{v:.2f}" for v in ys[::every_y]],
                     title=f"z{dims[1]}", showgrid=False, range=[h - 0.5, -0.5], scaleanchor="x")
    if density is not None and density_u is not None:
        px_x = density_u * step + cell / 2 - 0.5
        # density rows are in increasing y; picture rows go down
        px_y = (ny - 1 - density_u) * step + cell / 2 - 0.5
        fig.add_trace(go.Contour(x=px_x, y=px_y, z=density, showscale=False, ncontours=6,
                                 contours=dict(coloring="lines"), line=dict(width=1.5),
                                 colorscale=[[0, "rgba(255,140,0,0.3)"], [1, "rgba(220,20,60,1)"]],
                                 hoverinfo="skip", name="aggregate posterior density"))
    if targets is not None:
        u, z_x, z_y = (np.asarray(a, float) for a in targets)
        gx, gy = np.meshgrid(u * step + cell / 2 - 0.5, (ny - 1 - u) * step + cell / 2 - 0.5)  # (k, k) pixels
        zx, zy = np.meshgrid(z_x, z_y)  # row j holds z_y[j], drawn at picture row ny−1−u[j] (up is larger)
        fig.add_trace(go.Scattergl(x=gx.ravel(), y=gy.ravel(), mode="markers", showlegend=False,
                                   marker=dict(size=8, opacity=0),
                                   customdata=np.stack([zx.ravel(), zy.ravel()], axis=1),
                                   hovertemplate=f"z{dims[0]} %{{customdata[0]:.3f}}<br>z{dims[1]} "
                                                 "%{customdata[1]:.3f}<br>click to decode<extra></extra>"))
    return layout(fig, None, height)


def score_histogram(scores: np.ndarray, threshold: float, name: str, bins: int = 80, height: int = 330) -> go.Figure:
    scores = np.asarray(scores, float)
    fig = go.Figure(go.Histogram(x=scores, nbinsx=bins, marker_color="#4c78a8", name="test images"))
    flagged = int((scores > threshold).sum())
    fig.add_vline(x=threshold, line=dict(color="crimson", width=2, dash="dash"),
                  annotation_text=f"threshold {threshold:.1f}: {flagged} flagged", annotation_position="top right")
    fig.update_xaxes(title=name)
    fig.update_yaxes(title="images")
    return layout(fig, None, height)


def roc_figure(curves: dict[str, dict], height: int = 420) -> go.Figure:
    """ROC curves {name: projection.roc(...) result}, with the chance diagonal."""
    fig = go.Figure()
    for name, r in curves.items():
        fig.add_trace(go.Scatter(x=r["fpr"], y=r["tpr"], mode="lines", name=f"{name} (AUROC {r['auroc']:.3f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dot"),
                             name="chance (0.5)"))
    fig.update_xaxes(title="false positive rate", range=[0, 1])
    fig.update_yaxes(title="true positive rate", range=[0, 1.02], scaleanchor="x")
    fig.update_layout(legend=dict(orientation="h", x=0, y=-0.18, yanchor="top"))  # below: never over a curve
    return layout(fig, None, height)


def overlaid_histograms(sets: dict[str, np.ndarray], name: str, bins: int = 60, height: int = 360) -> go.Figure:
    """Histograms of several score sets {legend name: scores} on shared bins, overlaid and half transparent, each
    normalised to the percentage of its own images (a set of 500 images beside one of 10,000 stays visible). The
    legend sits below the axes, where it never hides a bar."""
    arrays = {k: np.asarray(v, float) for k, v in sets.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()]) if arrays else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    size = (hi - lo) / max(1, bins)
    edges = dict(start=lo, end=hi + size / 2, size=size)  # the same bins for every set
    fig = go.Figure()
    for k, (label, values) in enumerate(arrays.items()):
        fig.add_trace(go.Histogram(x=values, xbins=edges, histnorm="percent", opacity=0.6, name=label,
                                   marker_color=PALETTE[k % len(PALETTE)],
                                   hovertemplate="%{fullData.name}<br>%{x}: %{y:.1f} % of its images<extra></extra>"))
    fig.update_layout(barmode="overlay", bargap=0.02,
                      legend=dict(orientation="h", x=0, xanchor="left", y=0, yref="container", yanchor="bottom"))
    fig.update_xaxes(title=name)
    fig.update_yaxes(title="% of the set's images")
    layout(fig, None, height)
    fig.update_layout(margin=dict(b=50))  # room under the axis title for the legend
    return fig


def chart_text(text) -> str:
    """A user's string (a class name) as Plotly text: its pseudo-HTML (`<a href>`, `<b>`, `<br>`) shown as written,
    never acted on."""
    return html.escape(str(text), quote=False)


def class_label(class_names, i: int) -> str:
    """Class `i`'s name for a chart (its number when the data names none)."""
    return chart_text(class_names[i]) if class_names is not None and i < len(class_names) else str(i)


def count_bars(counts: list[tuple[str, int]], top: int = 12) -> go.Figure:
    """A selection's images per class (the `top` most, then the rest as one bar), as horizontal bars."""
    shown = counts[:top]
    if len(counts) > top:
        shown = shown + [(f"{len(counts) - top} more classes", sum(c for _, c in counts[top:]))]
    names = [chart_text(name) for name, _ in shown][::-1]
    values = [c for _, c in shown][::-1]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=PALETTE[0], text=values,
                           textposition="auto", hovertemplate="%{y}: %{x}<extra></extra>"))
    fig.update_xaxes(title="images")
    return layout(fig, "per class", height=max(180, 60 + 24 * len(shown)))
