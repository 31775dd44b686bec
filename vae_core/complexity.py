"""Input complexity of an image: its length under a lossless compressor, in nats, for the complexity-corrected
anomaly score of Serrà et al. 2020 ("Input complexity and out-of-distribution detection with likelihood-based
generative models", ICLR 2020). Numpy in, numpy out."""
from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
from PIL import Image

COMPRESSOR = "PNG (zlib, level 9)"  # what L(x) is measured with, for the page to name
PNG_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels → Pillow mode
NATS_PER_BYTE = 8 * math.log(2)


def quantise(x: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W), 8-bit or in [0, 1] → 8-bit (N, H, W, C): as they are, or round(x·255) clipped to 0…255."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        return x.transpose(0, 2, 3, 1)
    return np.clip(np.rint(x.astype(np.float32) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def png_bytes(image: np.ndarray) -> bytes:
    """One 8-bit image (H, W, C), C ∈ {1, 2, 3, 4}, as a PNG file (zlib level 9, Pillow's `optimize`)."""
    h, w, c = image.shape
    if c not in PNG_MODES:
        raise ValueError(f"PNG takes 1–4 channels, got {c}")
    img = Image.frombytes(PNG_MODES[c], (w, h), np.ascontiguousarray(image).tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, compress_level=9)
    return buf.getvalue()


def compressed_nats(x: np.ndarray, *, progress: Callable[[float], None] | None = None,
                    every: int = 500) -> np.ndarray:
    """L(x) per image: the length of its whole PNG file (header included) in nats, bytes·8·ln 2, for images
    in [0, 1] of shape (N, C, H, W). The header's constant ~57 bytes shift every image of one shape alike, so
    rankings and AUROCs do not see it. One image at a time; `progress` gets the fraction done every `every`
    images."""
    images = quantise(x)  # (N, H, W, C) uint8
    n = len(images)
    out = np.empty(n, dtype=np.float64)  # (N,)
    for i in range(n):
        out[i] = len(png_bytes(images[i]))
        if progress and ((i + 1) % every == 0 or i + 1 == n):
            progress((i + 1) / n)
    return out * NATS_PER_BYTE
