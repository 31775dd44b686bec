"""A user's images as arrays: .npz (`x`, optional `y`), .npy and .csv files, read without pickles, checked from
their headers before their data is read, and returned as 8-bit pixels wherever the values allow
(`pixels.to_pixels`). Folders and .zip files of PNG/JPEG images are `image_folder.py`'s."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .pixels import MAX_CHANNELS, ArrayData, DataError, check_array_shape, check_labels, to_pixels

MAX_ARRAY_BYTES = 16 << 30  # one user file or array, decompressed (the memory check is usually the tighter one)
MAX_COMPRESSION_RATIO = 100  # uncompressed : compressed, for a zip member (.npz array, image) over RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1 << 20
LABEL_COLUMNS = ("label", "labels", "y", "class", "target")


def open_source(source: str | os.PathLike | bytes | BinaryIO) -> tuple[BinaryIO, str, int]:
    """(a binary stream, the file name if known, its size in bytes) of a path, bytes or a binary file object.
    A path is opened, never read whole; one past MAX_ARRAY_BYTES is refused."""
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source), "", len(source)
    if hasattr(source, "read"):
        where = source.tell() if hasattr(source, "tell") else 0
        size = source.seek(0, io.SEEK_END) - where if hasattr(source, "seek") else -1
        if hasattr(source, "seek"):
            source.seek(where)
        return source, str(getattr(source, "name", "") or ""), size
    path = Path(source)
    try:
        size = path.stat().st_size
        stream = open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot open {path.name}: {err.strerror}") from None
    if size > MAX_ARRAY_BYTES:
        stream.close()
        raise DataError(f"{path.name} is {size / 2**20:,.0f} MiB; the limit is {MAX_ARRAY_BYTES >> 20:,} MiB")
    return stream, path.name, size


def read_array_file(source, filename: str | None = None) -> ArrayData:
    """Images (and optional labels) from .npz (`x`, optional `y`), .npy or .csv (one image per row, an optional
    label column named label/y/class or an extra first column). `source` is a path, bytes or a binary file;
    `filename` gives the extension when it is not a path. Raises `DataError` with a message a user can act on."""
    stream, name, size = open_source(source)
    name = filename or name
    with stream:
        ext = Path(name).suffix.lower()
        if size == 0:
            raise DataError(f"{name or 'the file'} is empty")
        if size > MAX_ARRAY_BYTES:  # bytes and uploads get the limit a path gets in open_source
            raise DataError(f"{name or 'the file'} is {size / 2**20:,.1f} MiB; the limit is "
                            f"{MAX_ARRAY_BYTES >> 20:,} MiB")
        if ext == ".npz":
            x, y = _read_npz(stream)
        elif ext == ".npy":
            x, y = _read_npy(stream, "the .npy file", size), None
        elif ext == ".csv":
            x, y = _read_csv(stream.read())
        else:
            raise DataError(f"unsupported file type {ext or '(none)'!r}: use .npz, .npy or .csv, or a folder or .zip "
                            "of PNG/JPEG images")
    return ArrayData(x=to_pixels(to_nchw(x)), y=None if y is None else check_labels(y, len(x)))


def _declared_images(shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """Refuse an array from its header alone: too large a file, or images the machine cannot hold."""
    if int(np.prod(shape)) * itemsize > MAX_ARRAY_BYTES:
        raise DataError(f"{what} of shape {shape} is larger than the {MAX_ARRAY_BYTES >> 20:,} MiB limit")
    nchw = _nchw_shape(shape)
    if nchw is not None:
        check_array_shape(*nchw, itemsize=itemsize)  # read as it is before it becomes 8-bit


def check_expansion(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a zip member that would expand more than MAX_COMPRESSION_RATIO times, from the zip's directory alone
    (before it is decompressed)."""
    if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
        raise DataError(f"{info.filename} in {where} would expand {info.file_size // max(1, info.compress_size):,} "
                        f"times ({info.file_size:,} bytes from {info.compress_size:,}); zip members may expand at most "
                        f"{MAX_COMPRESSION_RATIO}:1, so this looks like a zip bomb and is refused")


def _read_npy(f: BinaryIO, what: str, size: int) -> np.ndarray:
    """np.load without pickles, after checking the header so a huge or object array is never materialised: its
    shape and dtype against the limits, and the bytes they declare against the `size` the file really holds."""
    start = f.tell()
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
    _declared_images(shape, dtype.itemsize, what)
    declared = f.tell() - start + int(np.prod(shape)) * dtype.itemsize
    if size >= 0 and declared > size:
        raise DataError(f"{what} could not be read: its header declares {shape} of {dtype} ({declared:,} bytes) but "
                        f"it holds {size:,} bytes (truncated, or not what it says)")
    f.seek(start)
    try:
        return np.load(f, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{what} could not be read ({err})") from None


def _read_npz(stream: BinaryIO) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = zipfile.ZipFile(stream)
        members = {Path(i.filename).stem: i for i in archive.infolist()}
    except zipfile.BadZipFile:
        raise DataError("the .npz file is not a valid NumPy archive (zip)") from None
    if sum(i.file_size for i in members.values()) > MAX_ARRAY_BYTES:
        raise DataError(f"the .npz file expands past the {MAX_ARRAY_BYTES >> 20:,} MiB limit")
    if "x" not in members:
        raise DataError(f"the .npz file needs an array named 'x' (images); it has: {', '.join(members) or 'nothing'}")

    def read(key):
        check_expansion(members[key], "the .npz file")
        with archive.open(members[key]) as f:  # a zip member yields at most its recorded file_size
            return _read_npy(f, f"array '{key}'", members[key].file_size)  # seeking back to 0 re-reads the header

    return read("x"), (read("y") if "y" in members else None)


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


def _nchw_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(N, C, H, W) of an array of `shape` read as images (`to_nchw`), or None where it is not images."""
    if len(shape) == 2 and _is_square(shape[1]):
        return shape[0], 1, _is_square(shape[1]), _is_square(shape[1])
    if len(shape) == 3:
        return shape[0], 1, shape[1], shape[2]
    if len(shape) == 4 and 1 <= shape[3] <= MAX_CHANNELS:
        return shape[0], shape[3], shape[1], shape[2]
    return None


def to_nchw(x: np.ndarray) -> np.ndarray:
    """Accept N×H×W, N×H×W×C (C ≤ 4) or N×P with P a square; return N×C×H×W."""
    nchw = _nchw_shape(x.shape)
    if nchw is None:
        raise DataError(f"images have shape {x.shape}; expected N×H×W or N×H×W×C with C ≤ {MAX_CHANNELS}")
    check_array_shape(*nchw)
    if x.ndim == 4:
        return x.transpose(0, 3, 1, 2)
    return x.reshape(nchw)
