"""Datasets as one float tensor in [0, 1] of shape (N, C, H, W) on the device, plus labels and a fixed
train/test split. Built-in: scikit-learn's 8×8 digits (offline), MNIST and Fashion-MNIST (local IDX files
first, then a download with a timeout). User files: .npz, .npy, .csv — never unpickled — and folders or .zip
files of PNG/JPEG images (`image_folder.py`).
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .locations import DEBIAN_FASHION_MNIST, IDX_FILES, TORCHVISION_FOLDER, cache_dir, find_idx_files

MAX_IMAGES = 200_000
MAX_SIDE = 128  # pixels per image side
MAX_CHANNELS = 4
MAX_ARRAY_BYTES = 1 << 30  # decompressed size of one user array
MAX_CLASSES = 1000
MAX_PIXELS = 1 << 28  # pixel values of one user file: 1 GiB once float32 (a 1 GiB uint8 array would be 4 GiB)
DOWNLOAD_TIMEOUT_S = 30.0

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
BUILTIN = ("digits", "mnist", "fashion-mnist")


class DataError(ValueError):
    """A dataset or user file cannot be used; the message says what is wrong and what was expected."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor | None  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W)
    y_test: torch.Tensor | None  # (M,)
    class_names: tuple[str, ...] | None = None
    hash: str | None = None  # content hash of a user's dataset in the workspace (store.content_hash); None: built-in

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
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


def split_arrays(name: str, x: np.ndarray, y: np.ndarray | None, *, test_fraction: float = 0.2, seed: int = 0,
                 device="cpu", class_names=None, hash: str | None = None) -> Dataset:
    """A fixed, seeded train/test split of arrays already in [0, 1] with shape (N, C, H, W)."""
    n = len(x)
    if n < 2:
        raise DataError(f"need at least 2 images to split into train and test, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return from_split(name, x[train], None if y is None else y[train], x[test], None if y is None else y[test],
                      device=device, class_names=class_names, hash=hash)


def from_split(name, x_train, y_train, x_test, y_test, *, device="cpu", class_names=None, hash=None) -> Dataset:
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32).to(device)  # noqa: E731
    as_y = lambda a: None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.int64).to(device)  # noqa: E731
    return Dataset(name, as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test),
                   tuple(class_names) if class_names else None, hash)


MIN_IMAGES = 10  # a user's file needs enough images for a training and a test split


def check_image_count(name: str, n: int) -> None:
    if n < MIN_IMAGES:
        raise DataError(f"{name} holds {n} images; at least {MIN_IMAGES} are needed to train and test")


def from_arrays(name: str, arrays: "ArrayData", *, device="cpu", hash: str | None = None) -> Dataset:
    """A user's images as a Dataset with the fixed 80/20 split (seed 0); classes keep the names the arrays carry
    (an image folder's class folders), else are named by their number."""
    check_image_count(name, len(arrays.x))
    names = arrays.class_names
    if names is None and arrays.y is not None:
        names = [str(i) for i in range(int(arrays.y.max()) + 1)]
    return split_arrays(name, arrays.x, arrays.y, device=device, class_names=names, hash=hash)


# ---------------------------------------------------------------- built-in datasets

def load_digits(device="cpu") -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, grey levels 0…16), split 80/20 with seed 0."""
    from sklearn.datasets import load_digits as sk_digits  # imported on first use: keeps the app's start fast

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    return split_arrays("digits", x, bunch.target.astype(np.int64), device=device,
                        class_names=[str(i) for i in range(10)])


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
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


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
    return from_split(name, to_unit_range(arrays["train_x"])[:, None], arrays["train_y"].astype(np.int64),
                      to_unit_range(arrays["test_x"])[:, None], arrays["test_y"].astype(np.int64), device=device,
                      class_names=names)  # images (N, 1, 28, 28)


def load_dataset(name: str, device="cpu", **kwargs) -> Dataset:
    """A built-in dataset by name: `digits`, `mnist` or `fashion-mnist`."""
    if name == "digits":
        return load_digits(device)
    if name in TORCHVISION_FOLDER:
        return load_idx_dataset(name, device, **kwargs)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN)} or load a file")


# ---------------------------------------------------------------- user files

@dataclass
class ArrayData:
    x: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    y: np.ndarray | None  # (N,) int64
    class_names: tuple[str, ...] | None = None  # the name of each label 0…K-1 (an image folder's class folders)


def read_source(source: str | os.PathLike | bytes | BinaryIO) -> tuple[bytes, str]:
    """(the bytes, the file name if known) of a path (refused past MAX_ARRAY_BYTES), bytes or a binary file."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), ""
    if hasattr(source, "read"):
        return source.read(), getattr(source, "name", "")
    path = Path(source)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataError(f"cannot open {path.name}: {err.strerror}") from None
    if size > MAX_ARRAY_BYTES:
        raise DataError(f"{path.name} is {size / 2**20:.0f} MiB; the limit is {MAX_ARRAY_BYTES >> 20} MiB")
    return path.read_bytes(), path.name


def load_array_file(source, filename: str | None = None, *, image_size: int | None = None) -> ArrayData:
    """Read images (and optional labels) from .npz (`x`, optional `y`), .npy or .csv (one image per row,
    optional label column named label/y/class or an extra first column), or PNG/JPEG images from a folder or a
    .zip, class subfolders giving the labels (`image_folder.read_image_folder` / `read_image_zip`, which resize
    to `image_size`; array files ignore it).

    `source` is a path (a file or a folder), bytes or a binary file object; `filename` gives the extension when
    it is not a path. Raises `DataError` with a message a user can act on.
    """
    is_path = isinstance(source, (str, os.PathLike))
    if is_path and Path(source).is_dir():
        from .image_folder import read_image_folder  # imported on first use: Pillow only for images

        return read_image_folder(source, image_size=image_size)
    given_name = filename or (source if is_path else getattr(source, "name", None)) or ""
    if Path(str(given_name)).suffix.lower() == ".zip":
        from .image_folder import read_image_zip

        return read_image_zip(source, filename, image_size=image_size)
    raw, name = read_source(source)
    name = filename or name
    ext = Path(name).suffix.lower()
    if not raw:
        raise DataError(f"{name or 'the file'} is empty")
    if len(raw) > MAX_ARRAY_BYTES:  # bytes and uploads get the limit a path gets in read_source
        raise DataError(f"{name or 'the file'} is {len(raw) / 2**20:.1f} MiB; the limit is {MAX_ARRAY_BYTES >> 20} MiB")
    if ext == ".npz":
        x, y = _read_npz(raw)
    elif ext == ".npy":
        x, y = _read_npy(io.BytesIO(raw), "the .npy file"), None
    elif ext == ".csv":
        x, y = _read_csv(raw)
    else:
        raise DataError(f"unsupported file type {ext or '(none)'!r}: use .npz, .npy or .csv, or a folder or .zip "
                        "of PNG/JPEG images")
    return ArrayData(x=to_unit_range(to_nchw(x)), y=None if y is None else check_labels(y, len(x)))


def _read_npy(f: BinaryIO, what: str) -> np.ndarray:
    """np.load without pickles, after checking the header so a huge or object array is never materialised."""
    try:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except Exception:
        raise DataError(f"{what} is not a valid NumPy array file") from None
    if dtype.hasobject:
        raise DataError(f"{what} holds Python objects; only numeric arrays are accepted (no pickles)")
    if dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {dtype}; expected integers or floats")
    if int(np.prod(shape)) * dtype.itemsize > MAX_ARRAY_BYTES:
        raise DataError(f"{what} of shape {shape} is larger than the {MAX_ARRAY_BYTES >> 20} MiB limit")
    f.seek(0)
    try:
        return np.load(f, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{what} could not be read ({err})") from None


def _read_npz(raw: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        members = {Path(i.filename).stem: i for i in archive.infolist()}
    except zipfile.BadZipFile:
        raise DataError("the .npz file is not a valid NumPy archive (zip)") from None
    if sum(i.file_size for i in members.values()) > MAX_ARRAY_BYTES:
        raise DataError(f"the .npz file expands past the {MAX_ARRAY_BYTES >> 20} MiB limit")
    if "x" not in members:
        raise DataError(f"the .npz file needs an array named 'x' (images); it has: {', '.join(members) or 'nothing'}")

    def read(key):
        with archive.open(members[key]) as f:
            return _read_npy(io.BytesIO(f.read(MAX_ARRAY_BYTES + 1)), f"array '{key}'")

    return read("x"), (read("y") if "y" in members else None)


LABEL_COLUMNS = ("label", "labels", "y", "class", "target")


def _read_csv(raw: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd  # imported on first use: keeps the app's start fast

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError("the CSV file is not UTF-8 text") from None
    first = text.split("\n", 1)[0].split(",")
    has_header = any(_not_number(c) for c in first)
    try:
        frame = pd.read_csv(io.StringIO(text), header=0 if has_header else None)
    except Exception as err:
        raise DataError(f"the CSV file could not be parsed ({err})") from None
    if len(frame) == 0:
        raise DataError("the CSV file has no rows; expected one image per row")
    label_col = next((c for c in frame.columns if str(c).strip().lower() in LABEL_COLUMNS), None)
    if label_col is None and not has_header and _is_square(frame.shape[1] - 1) and not _is_square(frame.shape[1]):
        label_col = frame.columns[0]  # an extra leading column is the label, as in Kaggle's MNIST CSVs
    y = None
    if label_col is not None:
        y = frame.pop(label_col).to_numpy()
    values = frame.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & frame.notna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"the CSV file has text where a number should be (row {row + 1}, column {col + 1}: "
                        f"{frame.iat[row, col]!r})")
    if values.isna().to_numpy().any():
        raise DataError("the CSV file has empty cells; every row must have the same number of pixels")
    side = _is_square(values.shape[1])
    if not side:
        raise DataError(f"each CSV row has {values.shape[1]} pixel values; expected a square image (e.g. 784 = 28×28)")
    x = values.to_numpy(dtype=np.float64).reshape(len(values), side, side)
    if y is not None:
        y = pd.to_numeric(pd.Series(y), errors="coerce").to_numpy()
    return x, y


def _not_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return True


def _is_square(n: int) -> int:
    side = int(round(n ** 0.5))
    return side if n > 0 and side * side == n else 0


def to_nchw(x: np.ndarray) -> np.ndarray:
    """Accept N×H×W, N×H×W×C (C ≤ 4) or N×P with P a square; return N×C×H×W."""
    if x.ndim == 2 and _is_square(x.shape[1]):
        side = _is_square(x.shape[1])
        x = x.reshape(len(x), side, side)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and 1 <= x.shape[3] <= MAX_CHANNELS:
        x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"images have shape {x.shape}; expected N×H×W or N×H×W×C with C ≤ {MAX_CHANNELS}")
    check_array_shape(*x.shape)
    return x


def check_array_shape(n: int, c: int, h: int, w: int) -> None:
    """The limits on a user's (N, C, H, W) images: their number, side lengths and pixel values in all (checked
    before the pixels are made, where that is possible)."""
    if n == 0:
        raise DataError("the file holds no images")
    if n > MAX_IMAGES:
        raise DataError(f"{n} images is more than the limit of {MAX_IMAGES}")
    if h > MAX_SIDE or w > MAX_SIDE or h < 2 or w < 2:
        raise DataError(f"images are {h}×{w} pixels; the supported size is 2…{MAX_SIDE} per side")
    if n * c * h * w > MAX_PIXELS:
        raise DataError(f"{n:,} images of {c}×{h}×{w} are {n * c * h * w:,} pixel values; the limit is "
                        f"{MAX_PIXELS:,} (use fewer or smaller images)")


def to_unit_range(x: np.ndarray) -> np.ndarray:
    """uint8 and 0…255 values are divided by 255; floats already in [0, 1] are kept. Anything else is an error."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"pixel values have dtype {x.dtype}; expected integers or floats")
    xf = x.astype(np.float32)
    if x.dtype.kind == "f" and not np.isfinite(xf).all():  # integers are always finite
        raise DataError("pixel values contain NaN or infinity")
    low, high = float(x.min()), float(x.max())  # on the original array: 4× less memory to read for uint8
    if low < 0:
        raise DataError(f"pixel values must be ≥ 0; found {low:g}")
    if high > 255:
        raise DataError(f"pixel values must be in [0, 1] or [0, 255]; found {high:g}")
    if x.dtype.kind in "biu" or high > 1:
        np.divide(xf, np.float32(255.0), out=xf)  # in place: a second array of this size costs page faults
    return np.ascontiguousarray(xf)


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
