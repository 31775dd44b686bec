"""One image from outside the test set — drawn on a canvas or uploaded as a PNG/JPEG — made into the model's input
(C, H, W) in [0, 1], prepared like the dataset's images, and scored: its posterior mean and σ, −ELBO and
reconstruction. Numpy in, numpy out; no Streamlit.

Polarity. Digits, MNIST and Fashion-MNIST show bright objects on a dark background (border pixels 0). Which
kind a dataset is, is read from its test images: the median of their border pixels (`background_level`), below
0.5 meaning a dark background. The canvas is drawn in that polarity (bright pen on black, or black pen on white),
and an uploaded grey image whose own border is on the other side of 0.5 is inverted (`read_image`, `invert=None`).

Size. An image is centre-cropped to the model's aspect ratio and scaled to its H × W: shrinking averages the
pixels each output pixel covers (Pillow's BOX filter, i.e. antialiased area averaging, which is how the 8×8
digits were made from 32×32 bitmaps and MNIST from NIST's larger ones); enlarging a smaller image is bicubic.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from .data import DataError
from .pixels import as_float
from .image_folder import MAX_IMAGE_PIXELS, PIL_FORMATS
from .metrics import per_sample_scores

MAX_UPLOAD_BYTES = 32 << 20  # one uploaded image file
CANVAS_HEIGHT = 280  # canvas pixels: ten per pixel of a 28×28 image
CANVAS_MAX_WIDTH = 560


# ---------------------------------------------------------------- what the dataset looks like

def border_pixels(x: np.ndarray) -> np.ndarray:
    """The grey levels (mean over channels) of the outer frame of images (N, C, H, W) or one (C, H, W), flat."""
    x = as_float(np.asarray(x))
    grey = (x[None] if x.ndim == 3 else x).mean(axis=1, dtype=np.float32)  # (N, H, W)
    return np.concatenate([grey[:, 0, :].ravel(), grey[:, -1, :].ravel(), grey[:, 1:-1, 0].ravel(),
                           grey[:, 1:-1, -1].ravel()])


def background_level(x: np.ndarray) -> float:
    """The typical background grey level of images (N, C, H, W) or one (C, H, W) in [0, 1]: the median of their
    border pixels (robust to objects that touch the frame, unlike the mean of all pixels)."""
    return float(np.median(border_pixels(x)))


def dark_background(x: np.ndarray) -> bool:
    """True when images (N, C, H, W) show bright objects on a dark background (digits, MNIST, Fashion-MNIST)."""
    return background_level(x) < 0.5


# ---------------------------------------------------------------- into the model's input

def canvas_size(shape: tuple[int, int, int], height: int = CANVAS_HEIGHT) -> tuple[int, int]:
    """(width, height) of a drawing canvas with the model's aspect ratio (H × W images), at most CANVAS_MAX_WIDTH."""
    _, h, w = shape
    return int(min(CANVAS_MAX_WIDTH, max(1, round(height * w / h)))), int(height)


def pen_width(shape: tuple[int, int, int], height: int = CANVAS_HEIGHT) -> int:
    """A pen as wide as the strokes of the dataset's images: about 1.7 image pixels for small images (the 8×8
    digits' strokes are one to two pixels wide), 7.5 % of the canvas (2 pixels of 28) for larger ones."""
    return int(round(height * max(0.075, 1.7 / shape[1])))


def _fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`im` centre-cropped to the aspect ratio of `size` = (W, H) and scaled to it: area averaging (BOX) when
    shrinking, bicubic when enlarging."""
    (width, height), (tw, th) = im.size, size
    scale = max(tw / width, th / height)
    cw, ch = min(width, round(tw / scale)), min(height, round(th / scale))
    left, top = (width - cw) // 2, (height - ch) // 2
    box = (left, top, left + cw, top + ch)
    resample = Image.Resampling.BOX if cw >= tw and ch >= th else Image.Resampling.BICUBIC
    return im.resize(size, resample, box=box)


def _to_input(im: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """A Pillow image (mode L or RGB) → (C, H, W) float32 in [0, 1] at the model's size and channel count."""
    c, h, w = shape
    im = _fit(im.convert("L" if c == 1 else "RGB"), (w, h))
    pixels = np.asarray(im, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


def canvas_to_input(rgba: np.ndarray, shape: tuple[int, int, int], background: float = 0.0) -> np.ndarray:
    """A drawing canvas's RGBA pixels (h, w, 4) uint8 → the model's input (C, H, W) float32 in [0, 1].

    Transparent parts are the canvas's background (grey level `background`: 0 for a bright pen on black, as for
    digits/MNIST/Fashion-MNIST; 1 for a dark pen on white), the strokes are composited over it by their alpha,
    then the picture is made grey (or RGB for a colour model) and shrunk to H × W by area averaging."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4) or min(rgba.shape[:2]) < 1:
        raise ValueError(f"a canvas image is (height, width, 4) RGBA; got shape {rgba.shape}")
    if shape[0] not in (1, 3):
        raise ValueError(f"the model takes {shape[0]}-channel images; only grey and RGB can be drawn")
    pixels = rgba.astype(np.float32) / (255.0 if rgba.dtype == np.uint8 or rgba.max() > 1 else 1.0)
    alpha = pixels[..., 3:4] if rgba.shape[2] == 4 else np.ones_like(pixels[..., :1])  # (h, w, 1)
    rgb = pixels[..., :3] * alpha + float(background) * (1 - alpha)  # (h, w, 3) over the background
    im = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    return _to_input(im, shape)


def is_blank(x: np.ndarray, tolerance: float = 1 / 255) -> bool:
    """True when an image holds one grey level only (an empty canvas; a blank upload)."""
    x = np.asarray(x)
    return bool(x.size == 0 or float(x.max()) - float(x.min()) <= tolerance)


@dataclass(frozen=True)
class Prepared:
    """An uploaded image made into the model's input."""

    x: np.ndarray  # (C, H, W) float32 in [0, 1]
    inverted: bool  # its grey levels were inverted
    size: tuple[int, int]  # (width, height) of the file


def read_image(raw: bytes, name: str, shape: tuple[int, int, int], *, background: float | None = None,
               invert: bool | None = None) -> Prepared:
    """One uploaded PNG or JPEG file → the model's input (C, H, W) float32 in [0, 1] (`Prepared`).

    Read like an image folder's files (`image_folder`): only PNG/JPEG, the header's width × height checked before
    decoding, the EXIF orientation applied, transparency composited on white, grey or RGB as the model takes;
    then centre-cropped and scaled to H × W (module docstring). `invert`: True/False inverts or keeps the grey
    levels; None decides for a grey model from polarity: the image is inverted when its border (`background_level`)
    lies on the other side of 0.5 than `background`, the dataset's (never for colour models, or without
    `background`). Raises DataError naming the file when it is not a readable image."""
    c = shape[0]
    if len(raw) > MAX_UPLOAD_BYTES:
        raise DataError(f"{name} is {len(raw) / 2**20:.0f} MB; one image may be at most {MAX_UPLOAD_BYTES >> 20} MB")
    try:
        im = Image.open(io.BytesIO(raw), formats=PIL_FORMATS)
    except Exception:  # noqa: BLE001 — not an image, or another format, in any of Pillow's ways
        raise DataError(f"{name} is not a PNG or JPEG image; upload one .png, .jpg or .jpeg file") from None
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise DataError(f"{name} is {im.width:,}×{im.height:,} pixels; at most {MAX_IMAGE_PIXELS:,} pixels "
                        "are read")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except Exception as err:  # noqa: BLE001 — truncated or corrupt
        raise DataError(f"{name} cannot be read as a PNG or JPEG image ({err})") from None
    size = im.size
    if im.mode.startswith("I"):  # 16-bit grey: scale to 8 bits (Pillow's conversion to L would clip)
        im = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    x = _to_input(im.convert("RGB"), shape)
    if invert is None:
        invert = c == 1 and background is not None and (background_level(x) < 0.5) != (background < 0.5)
    if invert:
        x = 1.0 - x
    return Prepared(x.astype(np.float32), bool(invert), size)


# ---------------------------------------------------------------- what the model makes of it

@torch.no_grad()
def score(model, x: np.ndarray, label: int | None = None, seed: int = 0) -> dict:
    """Posterior mean "mu" (d,) and log-variance "logvar" (d,), "neg_elbo" (nats, one seeded posterior sample as
    `metrics.per_sample_scores` uses for the test images, so the two compare), "recon" and "kl" (nats) and the
    reconstruction "recon_image" (C, H, W) decoded from the posterior mean, of one image (C, H, W) in [0, 1]. A
    conditional model needs `label`."""
    device = next(model.parameters()).device
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)[None], device=device)  # (1, C, H, W)
    if tuple(xt.shape[1:]) != tuple(model.config.image_shape):
        raise ValueError(f"the image is {tuple(xt.shape[1:])} but the model takes {tuple(model.config.image_shape)}")
    y = None
    if model.config.n_classes:
        if label is None:
            raise ValueError("a conditional model needs the image's label")
        y = torch.tensor([int(label)], device=device)
    s = per_sample_scores(model, xt, y, seed=seed)
    recon = model.eval().reconstruct(xt, y)[0].cpu().numpy()  # (C, H, W)
    return {"mu": s["mu"][0], "logvar": s["logvar"][0], "neg_elbo": float(s["neg_elbo"][0]),
            "recon": float(s["recon"][0]), "kl": float(s["kl"][0]), "recon_image": recon}


def percentile(value: float, scores: np.ndarray) -> float:
    """The share (0…1) of `scores` below `value`: 0.9 means higher than 90 % of them."""
    scores = np.asarray(scores, dtype=np.float64)
    return float((scores < value).mean()) if len(scores) else float("nan")
