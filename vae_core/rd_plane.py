"""The rate–distortion plane (Alemi et al. 2018) as a Vega-Lite chart: each run at (rate R, distortion D), lines of
equal −ELBO = R + D, the distortion of a decoder that ignores z, and a name beside each point wherever it fits.
Vega-Lite, not Plotly: the collapse lab's first screen holds no other chart, and a new browser spends about three
seconds loading and starting Plotly's 4.7 MB script; Vega's is loaded with Streamlit's own. The spec is a plain
dict, testable without Streamlit or a browser: `plot_area` and `to_px` give where things land in px."""
from __future__ import annotations

import numpy as np

from .lab_plots import families, point_label, run_label
from .pictures import PALETTE

# Where a label goes beside its point: first to the right, then around it (vertical, horizontal).
SIDES = (("middle", "right"), ("middle", "left"), ("top", "center"), ("bottom", "center"), ("top", "right"),
         ("bottom", "right"), ("top", "left"), ("bottom", "left"))
LABEL_WIDTHS = (380, 1000)  # the plane's width in px on a 420-px phone and beside the sidebar on a 1400-px screen
_LEFT = 75  # px left of the plot area: padding, the y axis' labels (their extent is fixed) and its title
_RIGHT = 5  # px right of it: padding (the x axis' last label is kept inside: labelFlush)
_RADIUS = 5  # px, a point's marker
_GAP = _RADIUS + 3  # px from a point's centre to its label
_NOTE_GAP = 3  # px from a note's place (a line, the plot's edge) to its text
_DOTTED = "#bbb"
_NOTE = "#555"


def text_box(cx: float, cy: float, text: str, side: tuple[str, str], size: float, gap: float = _GAP) -> tuple:
    """(x0, y0, x1, y1) in px (y down) of `text` on `side` (vertical, horizontal) of a point at (cx, cy), `gap` px
    from its centre: about 0.6 × the font size per character, 1.25 × it high."""
    w, h = 0.6 * size * len(text), 1.25 * size
    vertical, horizontal = side
    x0 = cx + gap if horizontal == "right" else cx - gap - w if horizontal == "left" else cx - w / 2
    y0 = cy - gap - h if vertical == "top" else cy + gap if vertical == "bottom" else cy - h / 2
    return x0, y0, x0 + w, y0 + h


def plot_area(spec: dict, width: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in px of the plot area of `spec` drawn `width` px wide, from its top-left corner."""
    return 0.0, 0.0, float(width - _LEFT - _RIGHT), float(spec["height"])


def to_px(spec: dict, width: int, x: float | str, y: float | str) -> tuple[float, float]:
    """Data coordinates, or the plot's edges ("left"/"right", "top"/"bottom"), → px (y down) in the plot area of
    `spec` drawn `width` px wide."""
    left, top, right, bottom = plot_area(spec, width)
    (x0, x1), (y0, y1) = spec["encoding"]["x"]["scale"]["domain"], spec["encoding"]["y"]["scale"]["domain"]
    px = {"left": left, "right": right}[x] if isinstance(x, str) else (x - x0) / (x1 - x0) * right
    py = {"top": top, "bottom": bottom}[y] if isinstance(y, str) else (y1 - y) / (y1 - y0) * bottom
    return px, py


def _overlaps(a, b, pad: float = 2.0) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _inside(box, area) -> bool:
    return area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]


def _place_labels(spec: dict, points: list[tuple[float, float, str]], taken: dict, font: int) -> list:
    """A side for each point's label, or None where every side would cover another label, a point or the plot's
    edge at one of `LABEL_WIDTHS` (the label is then left out: the point's tooltip names it). Greedy: the points
    with the fewest neighbours first, so that crowds (collapsed runs at R ≈ 0) lose labels, not the rest.
    `taken`: {width: boxes of the texts already drawn}, added to."""
    px = {w: [to_px(spec, w, x, y) for x, y, _ in points] for w in LABEL_WIDTHS}
    markers = {w: [(cx - _RADIUS, cy - _RADIUS, cx + _RADIUS, cy + _RADIUS) for cx, cy in px[w]] for w in LABEL_WIDTHS}
    narrow = px[LABEL_WIDTHS[0]]
    crowd = [sum(abs(ax - bx) < 40 and abs(ay - by) < 20 for bx, by in narrow) for ax, ay in narrow]
    sides: list = [None] * len(points)
    for i in sorted(range(len(points)), key=lambda i: crowd[i]):
        for side in SIDES:
            boxes = {w: text_box(*px[w][i], points[i][2], side, font) for w in LABEL_WIDTHS}
            if all(_inside(b, plot_area(spec, w)) and not any(_overlaps(b, t) for t in taken[w])
                   and not any(_overlaps(b, m, 0) for m in markers[w]) for w, b in boxes.items()):
                sides[i] = side
                for w in LABEL_WIDTHS:
                    taken[w].append(boxes[w])
                break
    return sides


def _text_layer(rows: list[dict], side: tuple[str, str], font: int, colour: dict | str, gap: float) -> dict:
    """Texts (rows with R, D, text) on one `side` of their position, `gap` px away."""
    vertical, horizontal = side
    mark = {"type": "text", "fontSize": font, "align": {"right": "left", "left": "right"}.get(horizontal, "center"),
            "baseline": {"top": "bottom", "bottom": "top"}.get(vertical, "middle"),
            "dx": {"right": gap, "left": -gap}.get(horizontal, 0), "dy": {"top": -gap, "bottom": gap}.get(vertical, 0)}
    encoding = {"text": {"field": "text"}}
    if isinstance(colour, dict):
        encoding["color"] = colour
    else:
        mark["color"] = colour
    return {"data": {"values": rows}, "mark": mark, "encoding": encoding}


def rd_plane(evals: list[dict], collapsed_distortion: float | None = None, height: int = 520, *,
             names: list[str] | None = None, legend: list[str] | None = None, levels: list[float] | None = None,
             font: int = 10, stretch: bool = False) -> dict:
    """Each run at (rate R, distortion D) (Alemi et al. 2018), as a Vega-Lite spec. Dotted diagonals are lines of
    equal −ELBO = R + D at `levels` (default: five across the runs'): a run further down-left has the better ELBO;
    moving along a line trades rate for distortion at equal ELBO. Runs with the same λ and warm-up are joined in
    order of β. `collapsed_distortion` (a Bernoulli sweep's `sweep.collapsed_distortion`) is drawn as a dashed
    horizontal line: the distortion of a decoder that ignores z, where a factorised decoder's run with R = 0 lands.
    When it lies further from the runs than their own spread of D (a PixelCNN decoder's runs lie far below it), it
    is named at the plot's edge instead, so that the runs keep their scale, unless `stretch`. Each point is named
    (by its β or C, or by `names`) where the name fits without touching another text or point, on a phone as on a
    wide screen (`LABEL_WIDTHS`); the legend names the families (or each run by `legend`), the tooltip every run."""
    rates = np.array([e["rate"] for e in evals], float)
    dists = np.array([e["distortion"] for e in evals], float)
    totals = rates + dists
    r_max = max(1.0, float(rates.max()) * 1.15)
    d_lo, d_hi = float(dists.min()), float(dists.max())
    spread = max(1.0, d_hi - d_lo)
    line_shown = collapsed_distortion is not None and (
        stretch or d_lo - spread <= collapsed_distortion <= d_hi + spread)
    if line_shown:
        d_lo, d_hi = min(d_lo, collapsed_distortion), max(d_hi, collapsed_distortion)
    pad = max(1.0, 0.1 * (d_hi - d_lo))
    d_lo, d_hi = d_lo - pad, d_hi + pad
    groups = families(evals) if legend is None else {name: [i] for i, name in enumerate(legend)}
    colours = {family: PALETTE[n % len(PALETTE)] for n, family in enumerate(groups)}
    legend_entry = max(40 + 0.6 * (font + 2) * len(family) for family in groups)  # px: symbol, gap and name
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json", "height": height,
        "autosize": {"type": "fit-x", "contains": "padding"},
        "padding": dict.fromkeys(("left", "right", "top", "bottom"), 5),  # Streamlit's chart reads the four
        "config": {"axis": {"labelFontSize": font + 1, "titleFontSize": font + 2, "gridColor": "#eee"},
                   "view": {"stroke": None}, "legend": {"labelFontSize": font + 2}},  # all grow with `font`
        "encoding": {  # shared by every layer; the domains fix the plane, the marks outside it are clipped
            "x": {"field": "R", "type": "quantitative", "scale": {"domain": [-0.02 * r_max, r_max], "nice": False,
                                                                  "zero": False},
                  "axis": {"title": "rate R = KL(q(z|x) ‖ p(z)) [nats]", "labelFlush": True}},
            "y": {"field": "D", "type": "quantitative", "scale": {"domain": [d_lo, d_hi], "nice": False, "zero": False},
                  "axis": {"title": "distortion D = −log p(x|z) [nats]", "minExtent": 45, "maxExtent": 45}}},
        "layer": []}
    layers = spec["layer"]
    taken = {w: [] for w in LABEL_WIDTHS}  # the texts drawn so far, as boxes at each width
    note_font = max(10, font - 2)

    def note(text: str, x: float | str, y: float | str, side: tuple[str, str], colour: str = _NOTE) -> None:
        """A text whose box has `side` at (x, y): data coordinates, or "left"/"right"/"top"/"bottom" of the plot."""
        boxes = {w: text_box(*to_px(spec, w, x, y), text, side, note_font, _NOTE_GAP) for w in LABEL_WIDTHS}
        if any(not _inside(b, plot_area(spec, w)) or any(_overlaps(b, t) for t in taken[w]) for w, b in boxes.items()):
            return  # it would cover another text or leave the plot on a phone or a wide screen: left out
        for w, b in boxes.items():
            taken[w].append(b)
        layer = _text_layer([{"R": x, "D": y, "text": text}], side, note_font, colour, _NOTE_GAP)
        if isinstance(x, str):
            layer["encoding"]["x"] = {"value": 0 if x == "left" else "width"}
        if isinstance(y, str):
            layer["encoding"]["y"] = {"value": 0 if y == "top" else "height"}
        layers.append(layer)

    if line_shown:
        layers.append({"data": {"values": [{"R": x, "D": collapsed_distortion} for x in (-r_max, 2 * r_max)]},
                       "mark": {"type": "line", "color": _NOTE, "strokeDash": [6, 4], "strokeWidth": 1.5,
                                "clip": True}})
        note(f"decoder ignoring z: D = {collapsed_distortion:.2f}", r_max, collapsed_distortion, ("bottom", "left"))
        for w in LABEL_WIDTHS:  # the line itself: no point's label across it
            _, y = to_px(spec, w, 0, collapsed_distortion)
            taken[w].append((-w, y - 1, 2 * w, y + 1))
    elif collapsed_distortion is not None:
        above = collapsed_distortion > d_hi
        note(f"{'↑' if above else '↓'} decoder ignoring z: D = {collapsed_distortion:.2f}, "
             f"{'above' if above else 'below'} the plot", "left", "top" if above else "bottom",
             ("bottom" if above else "top", "right"))
    names = names or [point_label(e) for e in evals]  # the points' names before the lines' levels: they matter more
    sides = _place_labels(spec, [(rates[i], dists[i], names[i]) for i in range(len(evals))], taken, font)
    note("dotted: equal −ELBO", "right", "top", ("bottom", "left"))
    if levels is None:
        levels = list(np.linspace(totals.min(), totals.max(), 5)) if len(evals) > 1 else list(totals)
    diagonals = []
    for n, level in enumerate(levels):
        diagonals += [{"R": 0.0, "D": float(level), "level": n}, {"R": r_max, "D": float(level) - r_max, "level": n}]
        x_bottom = level - d_lo  # where the line leaves the plot at the bottom: labels spread along the x axis
        x_label, y_label = (x_bottom, d_lo) if x_bottom <= r_max else (r_max, level - r_max)
        note(f"{level:.1f}", x_label, y_label, ("top", "left"), "#999")
    layers.insert(0, {"data": {"values": diagonals}, "encoding": {"detail": {"field": "level"}},
                      "mark": {"type": "line", "color": _DOTTED, "strokeDash": [2, 3], "strokeWidth": 1, "clip": True}})
    runs = [{"R": float(rates[i]), "D": float(dists[i]), "family": family, "beta": evals[i]["beta"],
             "run": run_label(evals[i]), "−ELBO": float(totals[i]), "active units": evals[i].get("active_units"),
             "text": names[i], "side": sides[i]} for family, idx in groups.items() for i in idx]
    colour = {"field": "family", "type": "nominal", "scale": {"domain": list(colours), "range": list(colours.values())},
              "legend": {"orient": "top", "direction": "horizontal", "title": None, "symbolType": "circle",
                         "columns": {"expr": f"max(1, floor(width / {legend_entry:.0f}))"}}}  # as many as fit
    layers.append({"data": {"values": runs}, "layer": [
        {"mark": {"type": "line", "strokeWidth": 2}, "encoding": {"color": colour, "order": {"field": "beta"}}},
        {"mark": {"type": "circle", "size": np.pi * _RADIUS ** 2 * 1.2, "opacity": 1},
         "encoding": {"color": colour, "tooltip": [
             {"field": "run"}, {"field": "R", "title": "rate (nats)", "format": ".2f"},
             {"field": "D", "title": "distortion (nats)", "format": ".2f"}, {"field": "−ELBO", "format": ".2f"},
             {"field": "active units"}]}}]})
    for side in dict.fromkeys(s for s in sides if s is not None):
        rows = [r for r in runs if r["side"] == side]
        layers.append(_text_layer(rows, side, font, {**colour, "legend": None}, _GAP))
    return spec


def labels(spec: dict) -> list[tuple[str, float | str, float | str, tuple[str, str], float, int]]:
    """Every text on the plane as (text, x, y, side, gap, font size): what a test checks for overlaps."""
    out = []
    for layer in spec["layer"]:
        if layer.get("mark", {}).get("type") != "text":
            continue
        mark = layer["mark"]
        vertical = {"bottom": "top", "top": "bottom"}.get(mark["baseline"], "middle")
        horizontal = {"left": "right", "right": "left"}.get(mark["align"], "center")
        enc = layer["encoding"]
        for row in layer["data"]["values"]:
            x = {0: "left", "width": "right"}[enc["x"]["value"]] if "x" in enc else row["R"]
            y = {0: "top", "height": "bottom"}[enc["y"]["value"]] if "y" in enc else row["D"]
            out.append((row["text"], x, y, (vertical, horizontal), abs(mark["dx"]) or abs(mark["dy"]),
                        mark["fontSize"]))
    return out
