"""Images as the app holds them: 8-bit pixels, and the limits on a user's images.

Pixels stay 8-bit from the file to the device. A dataset's images are one uint8 array (N, C, H, W) whose value v
means v/255 — a quarter of float32's memory — or, only for images that are not 8-bit (grey levels k/16, floats
that are not multiples of 1/255), float32 in [0, 1]. `as_float` turns a batch into floats on its device, the only
place where that happens. The limits on a user's images follow the machine: a dataset must fit in its memory, and
the message says how much it needs and how much there is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

MAX_IMAGES = 1_000_000
MAX_SIDE = 256  # pixels per image side
MAX_CHANNELS = 4
MAX_CLASSES = 1000
MIN_IMAGES = 10  # a user's file needs enough images for a training and a test split
MEMORY_SHARE = 0.8  # of the memory available now that one dataset's pixels may take


class DataError(ValueError):
    """A dataset or user file cannot be used; the message says what is wrong and what was expected."""


@dataclass
class ArrayData:
    """A user's images as read from a file or the workspace.

    `x` (N, C, H, W) is uint8 (value v stands for v/255) or float32 in [0, 1] (`to_pixels`); `y` (N,) int64 or
    None; `class_names` the name of each label 0…K-1 (an image folder's class folders). A dataset stored in the
    workspace is in its split order: the last `n_test` rows are the test set (None: not split yet), `source_index`
    (N,) gives each row's position in the file it came from and `names` each row's file name (image folders)."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...] | None = None
    n_test: int | None = None
    source_index: np.ndarray | None = None
    names: tuple[str, ...] | None = None

    def in_file_order(self, limit: int | None = None) -> "ArrayData":
        """The first `limit` images (all: None) in the order of the file they came from (a stored dataset is kept
        in its split order), copied out of the store; arrays without a recorded order are returned as they are."""
        if self.source_index is None:
            return self if limit is None else ArrayData(self.x[:limit], None if self.y is None else self.y[:limit],
                                                        self.class_names)
        rows = np.argsort(self.source_index)[:limit]
        return ArrayData(x=self.x[rows], y=None if self.y is None else self.y[rows], class_names=self.class_names,
                         names=None if self.names is None else tuple(self.names[i] for i in rows))


def as_float(x):
    """A batch of images as float32 in [0, 1] on its own device: uint8 is divided by 255 (exactly the float32
    value v/255), floats are returned as they are. Works on tensors and numpy arrays alike."""
    if x.dtype == np.uint8 or str(x.dtype) == "torch.uint8":
        return x.float().div_(255.0) if hasattr(x, "div_") else np.divide(x, np.float32(255.0), dtype=np.float32)
    return x


def to_pixels(x: np.ndarray) -> np.ndarray:
    """A user's pixel values as the dataset keeps them: uint8 when every value is a whole number in 0…255, or a
    float in [0, 1] that is exactly k/255 (8-bit images written as floats); else float32 in [0, 1] (values above
    1 are read as 0…255 and divided by 255). NaN, infinity, negative values and values past 255 are refused."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"pixel values have dtype {x.dtype}; expected integers or floats")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f" and not np.isfinite(x).all():  # integers are always finite
        raise DataError("pixel values contain NaN or infinity")
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if low < 0:
        raise DataError(f"pixel values must be ≥ 0; found {low:g}")
    if high > 255:
        raise DataError(f"pixel values must be in [0, 1] or [0, 255]; found {high:g}")
    if x.dtype.kind in "biu":
        return x.astype(np.uint8)
    xf = np.ascontiguousarray(x, dtype=np.float32)
    if high > 1:
        np.divide(xf, np.float32(255.0), out=xf)  # in place: a second array of this size costs page faults
    u8 = np.clip(np.rint(xf * 255), 0, 255).astype(np.uint8)
    return u8 if np.array_equal(as_float(u8), xf) else xf


def pixel_bytes(n: int, c: int, h: int, w: int, itemsize: int = 1) -> int:
    return n * c * h * w * itemsize


def available_memory() -> int:
    """Bytes of memory available now (Linux: MemAvailable; elsewhere the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40  # unknown: do not refuse


def gib(n_bytes: float) -> str:
    """A size for people: 2.4 GiB, 310 MiB, 1.8 MiB."""
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:,.1f} GiB"
    return f"{n_bytes / 2**20:,.{0 if n_bytes >= 100 * 2**20 else 1}f} MiB"


def check_array_shape(n: int, c: int, h: int, w: int, itemsize: int = 1) -> None:
    """The limits on a user's (N, C, H, W) images, checked before the pixels are made: their number, side lengths
    and channels, and their size against the memory this machine has available (`itemsize` bytes per value:
    1 for 8-bit pixels)."""
    if n == 0:
        raise DataError("the file holds no images")
    if n > MAX_IMAGES:
        raise DataError(f"{n:,} images is more than the limit of {MAX_IMAGES:,}")
    if h > MAX_SIDE or w > MAX_SIDE or h < 2 or w < 2:
        raise DataError(f"images are {h}×{w} pixels; the supported size is 2…{MAX_SIDE} per side")
    if not 1 <= c <= MAX_CHANNELS:
        raise DataError(f"images have {c} channels; 1 to {MAX_CHANNELS} are supported")
    need, have = pixel_bytes(n, c, h, w, itemsize), available_memory()
    if need > MEMORY_SHARE * have:
        kind = "8-bit pixels" if itemsize == 1 else "32-bit float pixels"
        raise DataError(f"{n:,} images of {c}×{h}×{w} need {gib(need)} of memory as {kind}; this machine has "
                        f"{gib(have)} available (a dataset may take {MEMORY_SHARE:.0%} of it). Use fewer or smaller "
                        "images, or a machine with more memory")


def check_image_count(name: str, n: int) -> None:
    if n < MIN_IMAGES:
        raise DataError(f"{name} holds {n} images; at least {MIN_IMAGES} are needed to train and test")


def check_labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"labels have shape {y.shape}; expected one label per image ({n})")
    if y.dtype.kind not in "biuf":
        raise DataError(f"labels have dtype {y.dtype}; expected integers")
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any():
        raise DataError("labels must be whole numbers ≥ 0")
    if y.max() >= MAX_CLASSES:
        raise DataError(f"labels go up to {int(y.max())}; at most {MAX_CLASSES} classes are supported")
    return y.astype(np.int64)


def split_order(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, int]:
    """(order (N,), n_test): the fixed, seeded train/test split of N images as one permutation, training images
    first — `order[:N − n_test]` are the training set, `order[N − n_test:]` the test set, each in a seeded random
    order. Every user dataset is split this way (80/20, seed 0) and stored in this order."""
    if n < 2:
        raise DataError(f"need at least 2 images to split into train and test, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    return np.concatenate([perm[n_test:], perm[:n_test]]), n_test
