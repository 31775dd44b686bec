"""Static pictures: [0, 1] float images to uint8/PNG, galleries, and the overview figure (encoder map beside
the decoder's map of the same square), drawn server-side with Pillow so a page can show them without any
charting library. Numpy in, numpy or PNG bytes out; no Streamlit."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]  # one colour per class (matplotlib's tab10), shared with the Plotly figures


def to_uint8(picture: np.ndarray, scale: int = 1) -> np.ndarray:
    """A [0, 1] float picture (H, W) or (H, W, C) → uint8 (a uint8 one as it is), enlarged `scale` times (nearest
    neighbour). A diverged model's NaN pixels are drawn black."""
    img = np.asarray(picture)
    if img.dtype != np.uint8:
        img = (np.clip(np.nan_to_num(np.asarray(img, float)), 0, 1) * 255 + 0.5).astype(np.uint8)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    return img


def png_bytes(picture: np.ndarray, scale: int = 1) -> bytes:
    """PNG file bytes of a [0, 1] float picture, or of a uint8 one, enlarged `scale` times."""
    img = to_uint8(picture, scale)
    if img.ndim == 3 and img.shape[2] == 2:  # two channels: show the first as grey
        img = img[..., 0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def display_scale(image_side: int, target: int = 28) -> int:
    """Integer enlargement so a small image (e.g. 8×8 digits) is drawn at least about `target` pixels wide."""
    return max(1, int(np.ceil(target / max(1, image_side))))


def tile(images: np.ndarray, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """(rows, cols, C, H, W) → one (rows·(H+pad)−pad, cols·(W+pad)−pad[, C]) picture with thin separators:
    float32, or uint8 for 8-bit images (`to_uint8`)."""
    rows, cols, c, h, w = images.shape
    eight_bit = images.dtype == np.uint8
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), to_uint8(pad_value) if eight_bit else pad_value,
                  dtype=np.uint8 if eight_bit else np.float32)
    for r in range(rows):
        for k in range(cols):
            out[r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = images[r, k].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def pairs_picture(inputs: np.ndarray, recons: np.ndarray, per_row: int = 8) -> np.ndarray:
    """Inputs and reconstructions (N, C, H, W) as alternating rows: inputs on top, their reconstruction
    below, `per_row` images per row. Returns a (rows, cols, C, H, W) array for `tile`."""
    n = len(inputs)
    if n == 0:
        raise ValueError("no images")
    cols = min(per_row, n)
    rows = int(np.ceil(n / cols))
    blank = np.ones_like(inputs[0])
    out = np.empty((2 * rows, cols, *inputs.shape[1:]), dtype=np.float32)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        out[2 * r, c] = inputs[i] if i < n else blank
        out[2 * r + 1, c] = recons[i] if i < n else blank
    return out


def grid_of(images: np.ndarray, per_row: int = 8) -> np.ndarray:
    """(N, C, H, W) → (rows, cols, C, H, W), padded with white."""
    n = len(images)
    cols = max(1, min(per_row, n))
    rows = int(np.ceil(n / cols))
    out = np.ones((rows, cols, *images.shape[1:]), dtype=np.float32)
    for i in range(n):
        out[i // cols, i % cols] = images[i]
    return out


# ---------------------------------------------------------------- the overview figure

def square_limit(xy: np.ndarray, quantile: float = 0.995) -> float:
    """Half-width of a square around 0 that holds `quantile` of the points on both axes: a whole number
    from 2 to 8, so both panels of the overview get integer ticks."""
    values = np.abs(np.asarray(xy, float)).ravel()
    values = values[np.isfinite(values)]
    if not len(values):
        return 3.0
    return float(min(8, max(2, int(np.ceil(np.quantile(values, quantile))))))


def cell_centres(limit: float, n: int) -> np.ndarray:
    """The centres of `n` equal cells across [−limit, limit]: where the decoder panel is decoded."""
    edges = np.linspace(-limit, limit, n + 1)
    return (edges[:-1] + edges[1:]) / 2


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def scatter_panel(xy: np.ndarray, classes: np.ndarray | None, limit: float, size: int = 400,
                  prior_rings: bool = True) -> Image.Image:
    """Points (N, 2) in the square [−limit, limit]² as small discs on white, coloured by class (grey without
    classes), y up; dotted prior rings at 1σ, 2σ and 3σ when `prior_rings`. Points outside are left out."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    scale = size / (2 * limit)
    if prior_rings:
        for r in (1, 2, 3):
            if r <= limit:
                c = size / 2
                for a in np.linspace(0, 2 * np.pi, int(2 * np.pi * r * scale / 6), endpoint=False):  # a dot per 6 px
                    x, y = c + r * scale * np.cos(a), c + r * scale * np.sin(a)
                    draw.point((x, y), fill=(90, 90, 90))
    canvas = np.asarray(img).copy()  # (size, size, 3)
    xy = np.asarray(xy, float)
    px = np.floor((xy[:, 0] + limit) * scale).astype(int)  # (N,)
    py = np.floor((limit - xy[:, 1]) * scale).astype(int)  # (N,) row 0 at the top
    colours = np.array([_rgb(c) for c in PALETTE], dtype=np.uint8)
    rgb = (np.full((len(xy), 3), 110, np.uint8) if classes is None
           else colours[np.asarray(classes, int) % len(colours)])  # (N, 3)
    for dx, dy in [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)] + [(0, -2), (0, 2), (-2, 0), (2, 0)]:
        x, y = px + dx, py + dy
        inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
        canvas[y[inside], x[inside]] = rgb[inside]
    return Image.fromarray(canvas)


def _frame(panel: Image.Image, limit: float | None, title: str, x_title: str = "", y_title: str = "") -> Image.Image:
    """The panel with a title above, a frame, and (given a `limit`) integer ticks of [−limit, limit] on both
    axes with their titles."""
    size = panel.width
    left, top, bottom = 44, 28, 40
    out = Image.new("RGB", (left + size + 12, top + size + bottom), "white")
    out.paste(panel, (left, top))
    draw = ImageDraw.Draw(out)
    font, small = _font(15), _font(12)
    draw.text((left, 4), title, fill=(30, 30, 30), font=font)
    draw.rectangle((left - 1, top - 1, left + size, top + size), outline=(60, 60, 60))
    if limit is None:
        return out
    step = 1 if limit <= 4 else 2
    for v in np.arange(-limit, limit + 1e-9, step):
        p = (v + limit) / (2 * limit) * size
        label = f"{v:g}"  # ASCII: Pillow's built-in font has no minus sign or Greek letters
        draw.line((left + p, top + size, left + p, top + size + 4), fill=(60, 60, 60))
        draw.text((left + p, top + size + 6), label, fill=(60, 60, 60), font=small, anchor="ma")
        draw.line((left - 5, top + size - p, left - 1, top + size - p), fill=(60, 60, 60))
        draw.text((left - 7, top + size - p), label, fill=(60, 60, 60), font=small, anchor="rm")
    draw.text((left + size / 2, top + size + 22), x_title, fill=(30, 30, 30), font=small, anchor="ma")
    draw.text((4, top - 16), y_title, fill=(30, 30, 30), font=small)
    return out


def _legend(names: list[str], width: int) -> Image.Image:
    """Coloured squares with class names, flowing into as many rows as `width` needs."""
    font = _font(13)
    items = [(PALETTE[i % len(PALETTE)], name) for i, name in enumerate(names)]
    widths = [20 + int(font.getlength(name)) + 18 for _, name in items]
    rows, row, used = [], [], 0
    for item, w in zip(items, widths):
        if row and used + w > width:
            rows.append(row)
            row, used = [], 0
        row.append((item, w))
        used += w
    rows.append(row)
    out = Image.new("RGB", (width, 22 * len(rows) + 6), "white")
    draw = ImageDraw.Draw(out)
    for r, row in enumerate(rows):
        x = (width - sum(w for _, w in row)) // 2
        for (colour, name), w in row:
            y = 4 + 22 * r
            draw.rectangle((x, y + 2, x + 12, y + 14), fill=_rgb(colour))
            draw.text((x + 18, y + 8), name, fill=(30, 30, 30), font=font, anchor="lm")
            x += w
    return out


def overview_figure(xy: np.ndarray | None, classes: np.ndarray | None, class_names: list[str] | None,
                    decoded: np.ndarray, limit: float, *, left_title: str, right_title: str,
                    axis_names: tuple[str, str] = ("z0", "z1"), raw_latent: bool = True,
                    size: int = 400) -> np.ndarray:
    """The overview: on the left the 2-D points (encoded test images) in [−limit, limit]², on the right the
    decoded images `decoded` (rows, cols, C, H, W, row 0 at the top) filling a square of the same size, and
    a class legend below. With `raw_latent`, both panels share the latent axes and the prior's rings. Without
    points (`xy` None: the test images are not available) only the decoder panel is drawn.
    Returns an RGB uint8 picture (H, W, 3)."""
    tiles = tile(np.asarray(decoded), pad=1)  # white 1-px seams
    tiles = tiles if tiles.ndim == 2 else tiles[..., :3]
    grid = Image.fromarray(to_uint8(tiles)).convert("RGB")
    up = size // max(grid.size)  # small images (8×8 digits) are first enlarged by whole pixels so they stay sharp
    if up > 1:
        grid = grid.resize((grid.width * up, grid.height * up), Image.Resampling.NEAREST)
    grid = grid.resize((size, size), Image.Resampling.LANCZOS)
    right = _frame(grid, limit, right_title, *axis_names) if raw_latent else _frame(grid, None, right_title)
    if xy is None:
        return np.asarray(right)
    both = _beside(_map_panel(xy, classes, limit, left_title, axis_names, raw_latent, size), right, gap=24)
    return _above(both, None if classes is None else _legend(_class_names(classes, class_names), both.width))


def map_picture(xy: np.ndarray, classes: np.ndarray | None, class_names: list[str] | None, limit: float, *,
                title: str, axis_names: tuple[str, str] = ("z0", "z1"), raw_latent: bool = True,
                size: int = 400) -> np.ndarray:
    """The overview's left panel on its own, with its class legend below: the 2-D points in [−limit, limit]² (over
    the prior's rings when `raw_latent`). RGB uint8 (H, W, 3)."""
    panel = _map_panel(xy, classes, limit, title, axis_names, raw_latent, size)
    return _above(panel, None if classes is None else _legend(_class_names(classes, class_names), panel.width))


def _map_panel(xy, classes, limit: float, title: str, axis_names: tuple[str, str], raw_latent: bool,
               size: int) -> Image.Image:
    return _frame(scatter_panel(xy, classes, limit, size, prior_rings=raw_latent), limit, title, *axis_names)


def _class_names(classes: np.ndarray, class_names: list[str] | None) -> list[str]:
    k = int(np.max(classes)) + 1 if len(classes) else 0
    return [str(class_names[i]) if class_names is not None and i < len(class_names) else str(i) for i in range(k)]


def _beside(left: Image.Image, right: Image.Image, gap: int) -> Image.Image:
    out = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out


def _above(top: Image.Image, below: Image.Image | None) -> np.ndarray:
    """`top` with `below` (if any) under it, as an RGB uint8 array."""
    if below is None:
        return np.asarray(top)
    out = Image.new("RGB", (max(top.width, below.width), top.height + below.height), "white")
    out.paste(top, (0, 0))
    out.paste(below, (0, top.height))
    return np.asarray(out)
