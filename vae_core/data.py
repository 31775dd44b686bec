"""Datasets as 8-bit tensors (N, C, H, W) on the device, plus labels and a fixed train/test split; batches become
floats in [0, 1] on the device (`pixels.as_float`). Built-in: scikit-learn's 8×8 digits (offline; grey levels k/16,
so float32), MNIST and Fashion-MNIST (local IDX files first, then a download with a timeout). User files: .npz,
.npy, .csv (`array_files.py`) — never unpickled — and folders or .zip files of PNG/JPEG images
(`image_folder.py`); `load_array_file` reads any of them into memory, `store.Workspace.register` streams them
into the workspace.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import image_folder
from .array_files import read_array_file
from .locations import DEBIAN_FASHION_MNIST, IDX_FILES, TORCHVISION_FOLDER, cache_dir, find_idx_files
from .pixels import ArrayData, DataError, check_image_count, gib, split_order

DOWNLOAD_TIMEOUT_S = 30.0

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
BUILTIN = ("digits", "mnist", "fashion-mnist")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) uint8 (v/255), or float32 in [0, 1] for images that are not 8-bit
    y_train: torch.Tensor | None  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W)
    y_test: torch.Tensor | None  # (M,)
    class_names: tuple[str, ...] | None = None
    hash: str | None = None  # content hash of a user's dataset in the workspace (store.content_hash); None: built-in

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @functools.cached_property
    def n_classes(self) -> int:
        """Label count (0: unlabelled); once per dataset: a page asks on every rerun, and on a busy server even a
        small tensor reduction waits for the interpreter lock."""
        if self.y_train is None:
            return 0
        return int(max(self.y_train.max(), self.y_test.max() if len(self.y_test) else 0)) + 1

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device) -> "Dataset":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(self, x_train=move(self.x_train), y_train=move(self.y_train),
                                   x_test=move(self.x_test), y_test=move(self.y_test))

    def subset(self, n_train: int = 0, n_test: int = 0) -> "Dataset":
        """The first n_train / n_test images (0 keeps all): a fixed subset for quick experiments."""
        if n_train <= 0 and n_test <= 0:
            return self  # (the same object: what it has computed once, e.g. its class count, is kept)
        cut = lambda t, n: t if t is None or n <= 0 else t[:n]  # noqa: E731
        return dataclasses.replace(self, x_train=cut(self.x_train, n_train), y_train=cut(self.y_train, n_train),
                                   x_test=cut(self.x_test, n_test), y_test=cut(self.y_test, n_test))

    def without_class(self, label: int) -> "Dataset":
        """Every training image of class `label` removed; the test set is kept whole (the held-out-class
        anomaly experiment trains on this and scores the full test set)."""
        if self.y_train is None or self.y_test is None:
            raise DataError("the held-out-class experiment needs a labelled dataset")
        keep = self.y_train != label  # (N,)
        if bool(keep.all()):
            raise DataError(f"class {label} does not occur in the training set")
        if not bool((self.y_test == label).any()):
            raise DataError(f"class {label} does not occur in the test set")
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep])

    def info(self) -> dict:
        """What a checkpoint records about its data: enough to find it again (`store.DataRef.from_info`)."""
        return {"name": self.name, "source": "builtin" if self.hash is None else "file", "hash": self.hash,
                "image_shape": list(self.image_shape), "n_train": len(self.x_train),
                "n_test": len(self.x_test), "n_classes": self.n_classes,
                "class_names": list(self.class_names) if self.class_names else None}


def split_arrays(name: str, x: np.ndarray, y: np.ndarray | None, *, device="cpu", class_names=None,
                 hash: str | None = None) -> Dataset:
    """The fixed, seeded 80/20 train/test split (`pixels.split_order`) of images (N, C, H, W)."""
    order, n_test = split_order(len(x))
    train, test = order[:len(x) - n_test], order[len(x) - n_test:]
    return from_split(name, x[train], None if y is None else y[train], x[test], None if y is None else y[test],
                      device=device, class_names=class_names, hash=hash)


def from_split(name, x_train, y_train, x_test, y_test, *, device="cpu", class_names=None, hash=None) -> Dataset:
    """A Dataset of numpy images as they are (uint8 or float32: `pixels.to_pixels`) and labels, on `device`. Arrays
    that are views of a stored file (a memory map) stay views on the CPU: nothing is copied."""
    as_y = lambda a: None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.int64).to(device)  # noqa: E731
    return Dataset(name, _as_x(x_train, device), as_y(y_train), _as_x(x_test, device), as_y(y_test),
                   tuple(class_names) if class_names else None, hash)


def _as_x(x: np.ndarray, device) -> torch.Tensor:
    if x.dtype not in (np.uint8, np.float32):
        raise DataError(f"images must be uint8 or float32 pixels, got {x.dtype}")
    device = torch.device(device)
    if device.type == "cuda":  # the whole dataset lives on the GPU: say so when it cannot
        free, _ = torch.cuda.mem_get_info(device)
        if x.nbytes > 0.8 * free:
            raise DataError(f"the images need {gib(x.nbytes)} on the GPU, which has {gib(free)} free; use fewer or "
                            "smaller images, or train on the CPU (VAE_DEVICE=cpu)")
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)  # a memory-mapped file stays mapped on the CPU


def from_arrays(name: str, arrays: ArrayData, *, device="cpu", hash: str | None = None) -> Dataset:
    """A user's images as a Dataset with the fixed 80/20 split (seed 0): a stored dataset is in that order already
    (its last `n_test` rows are the test set: two views, no copy), other arrays are split here. Classes keep the
    names the arrays carry (an image folder's class folders), else are named by their number."""
    check_image_count(name, len(arrays.x))
    names = arrays.class_names
    if names is None and arrays.y is not None:
        names = [str(i) for i in range(int(arrays.y.max()) + 1)]
    if arrays.n_test is None:
        return split_arrays(name, arrays.x, arrays.y, device=device, class_names=names, hash=hash)
    cut = len(arrays.x) - arrays.n_test
    y = arrays.y
    return from_split(name, arrays.x[:cut], None if y is None else y[:cut], arrays.x[cut:],
                      None if y is None else y[cut:], device=device, class_names=names, hash=hash)


# ---------------------------------------------------------------- built-in datasets

def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits: images (1797, 8, 8) float64 with grey levels 0…16, labels (1797,) int64.
    Read from the CSV that scikit-learn ships, without importing scikit-learn (`sklearn.datasets` imports SciPy:
    1.7 s here, paid by every worker process's first run on the digits); its loader where that file is not found."""
    spec = importlib.util.find_spec("sklearn")  # (locates the package; imports nothing)
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits as sk_digits  # noqa: PLC0415

        bunch = sk_digits()
        return bunch.images, bunch.target.astype(np.int64)
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",")  # (1797, 65): 64 pixels, then the label
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits(device="cpu") -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, grey levels 0…16), split 80/20 with seed 0."""
    images, labels = digits_arrays()
    x = (images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    return split_arrays("digits", x, labels, device=device, class_names=[str(i) for i in range(10)])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), optionally gzip-compressed, as a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path.name}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path.name} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path.name}: only unsigned-byte IDX data (type 0x08) is supported, got 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path.name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path.name}: expected {int(np.prod(shape))} data bytes for shape {shape}, "
                        f"found {len(raw) - header}")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)  # writable: torch shares it


def download_idx(name: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch MNIST / Fashion-MNIST into the cache through torchvision, each connection bounded by `timeout`."""
    from torchvision import datasets  # imported on first use: only a download needs it

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        for train in (True, False):
            cls(str(cache_dir()), train=train, download=True)
    except Exception as err:  # torchvision raises RuntimeError, URLError, socket.timeout…
        raise DataError(_missing_message(name, f"the download failed ({type(err).__name__}: {err})")) from None
    finally:
        socket.setdefaulttimeout(previous)


def _missing_message(name: str, why: str) -> str:
    files = ", ".join(f"{s}.gz" for s in IDX_FILES.values())
    where = f"$VAE_DATA_DIR/{name}/" + (f" or {DEBIAN_FASHION_MNIST}/ (Debian: apt install dataset-fashion-mnist)"
                                        if name == "fashion-mnist" else "")
    return f"{name} is not available: {why}. Put the four IDX files ({files}) in {where}, or allow the download."


def load_idx_dataset(name: str, device="cpu", *, data_dir=None, download: bool = False,
                     timeout: float = DOWNLOAD_TIMEOUT_S) -> Dataset:
    files = find_idx_files(name, data_dir)
    if files is None:
        if not download:
            raise DataError(_missing_message(name, "no local copy was found"))
        download_idx(name, timeout)
        files = find_idx_files(name, data_dir)
        if files is None:
            raise DataError(_missing_message(name, "the download did not leave the expected files"))
    arrays = {key: read_idx(path) for key, path in files.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name}: {part} images {x.shape} and labels {y.shape} do not match")
    names = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return from_split(name, arrays["train_x"][:, None], arrays["train_y"].astype(np.int64), arrays["test_x"][:, None],
                      arrays["test_y"].astype(np.int64), device=device, class_names=names)  # (N, 1, 28, 28) uint8


def load_dataset(name: str, device="cpu", **kwargs) -> Dataset:
    """A built-in dataset by name: `digits`, `mnist` or `fashion-mnist`."""
    if name == "digits":
        return load_digits(device)
    if name in TORCHVISION_FOLDER:
        return load_idx_dataset(name, device, **kwargs)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN)} or load a file")


# ---------------------------------------------------------------- user files

def load_array_file(source, filename: str | None = None, *, image_size: int | None = None) -> ArrayData:
    """A user's images, all in memory: .npz, .npy or .csv (`array_files.read_array_file`), or PNG/JPEG images
    from a folder or a .zip, class subfolders giving the labels (`image_folder`, resized to `image_size`; array
    files ignore it). `source` is a path (a file or a folder), bytes or a binary file object; `filename` gives the
    extension when it is not a path. Raises `DataError` with a message a user can act on."""
    if image_folder.is_image_set(source, filename):
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            return image_folder.read_image_folder(source, image_size=image_size)
        return image_folder.read_image_zip(source, filename, image_size=image_size)
    return read_array_file(source, filename)
