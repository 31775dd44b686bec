"""One stored user dataset: a safetensors file whose pixels are written as they are decoded and read memory-mapped.

Layout (format 2). Tensors `x` (N, C, H, W) uint8 — or float32 for images that are not 8-bit — then `y` (N,)
int64 labels, `source_index` (N,) int64 (each row's position in the file it came from) and `names` (the rows' file
names, NUL-separated UTF-8, image folders only); the header's `__metadata__` holds a JSON record (file name, shape,
classes, the split, the content hash). Rows are in the dataset's split order (`pixels.split_order`: the training
images, then the last `n_test` rows the test images), so opening the file gives the training and the test set as two
views of one memory map: nothing is copied, nothing is unpickled.

Writing. `Writer` reserves the header first (the hash in it is a placeholder of the same length), takes pixel rows
in any order from any thread (`os.pwrite`), and at `finish` hashes the rows as stored, writes the real header and
hands back the file to be renamed to its hash. The pixels are never held in memory by the writer.

Content hash (version 2): SHA-256 of the pixels in stored order (their dtype and shape), the labels in the same
order, and the class names. The same images in the same order give the same hash whatever file they came in
(.npz, .csv, a folder, a .zip). Format 1 files (before this one: the original order, the hash taken over float32
values, `content_hash_v1`) are still read and checked.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from .files import fsync_dir, pwrite_all, temporary
from .image_folder import FileRows
from .pixels import ArrayData, DataError, as_float, split_order

FORMAT = 2
KEY = "vae_core_dataset"
DTYPES = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
HASH_CHUNK = 4 << 20  # bytes hashed at a time
MAX_HEADER = 64 << 20


# ---------------------------------------------------------------- content hash

def _hasher(shape, dtype, labelled: bool) -> "hashlib._Hash":
    h = hashlib.sha256(b"vae_core dataset v2\n")
    h.update(json.dumps({"shape": list(map(int, shape)), "dtype": str(np.dtype(dtype)), "labels": labelled}).encode())
    return h


def _hash_rows(h, x: np.ndarray, order: np.ndarray | None = None) -> None:
    """Feed the rows of x — in `order` when given — to h, a bounded chunk at a time."""
    row_bytes = max(1, x[0].nbytes if len(x) else 1)
    step = max(1, HASH_CHUNK // row_bytes)
    for start in range(0, len(x), step):
        rows = x[start:start + step] if order is None else x[order[start:start + step]]
        h.update(memoryview(np.ascontiguousarray(rows)).cast("B"))


def _finish_hash(h, y: np.ndarray | None, class_names) -> str:
    if y is not None:
        h.update(memoryview(np.ascontiguousarray(y, dtype=np.int64)).cast("B"))
    if class_names is not None:
        h.update(json.dumps({"class_names": list(class_names)}).encode())
    return h.hexdigest()


def content_hash(arrays: ArrayData) -> str:
    """A dataset's identity (version 2): its pixels and labels in stored (split) order, and its class names. Arrays
    already in stored order (`n_test` set) are hashed as they are; others in the order they will be stored."""
    x, y = arrays.x, arrays.y
    order = None if arrays.n_test is not None else split_order(len(x))[0]
    h = _hasher(x.shape, x.dtype, y is not None)
    _hash_rows(h, x, order)
    return _finish_hash(h, None if y is None else (y if order is None else y[order]), arrays.class_names)


def content_hash_v1(arrays: ArrayData) -> str:
    """The hash of format 1 (checkpoints made before format 2 record it): SHA-256 of the images as float32 in
    [0, 1] in their original order, the labels and the class names. Only for files and models from before."""
    x = arrays.x
    if arrays.n_test is not None and arrays.source_index is not None:  # stored order: back to the original one
        x = x[np.argsort(arrays.source_index)]
        y = None if arrays.y is None else arrays.y[np.argsort(arrays.source_index)]
    else:
        y = arrays.y
    h = hashlib.sha256(b"vae_core dataset v1\n")
    h.update(json.dumps({"shape": list(x.shape), "labels": y is not None}).encode())
    step = max(1, HASH_CHUNK // max(1, 4 * x[0].size))
    for start in range(0, len(x), step):
        h.update(memoryview(np.ascontiguousarray(as_float(x[start:start + step]), dtype=np.float32)).cast("B"))
    return _finish_hash(h, y, arrays.class_names)


# ---------------------------------------------------------------- writing

def _header_bytes(tensors: dict[str, tuple[str, list[int], int, int]], meta: dict) -> bytes:
    """The safetensors header (8-byte length, JSON padded with spaces to a multiple of 8)."""
    header = {name: {"dtype": dt, "shape": shape, "data_offsets": [begin, end]}
              for name, (dt, shape, begin, end) in tensors.items()}
    header["__metadata__"] = {KEY: json.dumps(meta, ensure_ascii=False)}
    text = json.dumps(header, ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class Writer:
    """A dataset file being written into `folder` (a hidden temporary file until `finish`). `shape` (N, C, H, W)
    and `dtype` are the pixels'; `y`, `source_index` and `names` are already in stored order."""

    def __init__(self, folder: Path, shape: tuple[int, int, int, int], dtype, meta: dict, *, y: np.ndarray | None,
                 source_index: np.ndarray, names: tuple[str, ...] | None, class_names):
        self.shape, self.dtype = tuple(map(int, shape)), np.dtype(dtype)
        self.y, self.class_names = y, class_names
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        extra = {"y": None if y is None else np.ascontiguousarray(y, dtype=np.int64),
                 "source_index": np.ascontiguousarray(source_index, dtype=np.int64),
                 "names": None if names is None else np.frombuffer("\0".join(names).encode(), dtype=np.uint8)}
        self.extra = {k: v for k, v in extra.items() if v is not None}
        offset = self.shape[0] * self.row_bytes
        self.tensors = {"x": (DTYPES[self.dtype], list(self.shape), 0, offset)}
        for name, value in self.extra.items():
            self.tensors[name] = (DTYPES[value.dtype], list(value.shape), offset, offset + value.nbytes)
            offset += value.nbytes
        self.meta = dict(meta, format_version=FORMAT, hash="0" * 64, hash_version=2,
                         extras_sha256=_extras_digest(self.extra.values()))
        self.head = len(_header_bytes(self.tensors, self.meta))
        folder.mkdir(parents=True, exist_ok=True)
        self.fd, self.path = temporary(folder, "register")
        self._lock = threading.Lock()
        try:
            os.fchmod(self.fd, 0o644)
            os.ftruncate(self.fd, self.head + offset)
            for name, value in self.extra.items():
                self._pwrite(value, self.head + self.tensors[name][2])
        except OSError as err:
            self.abort()
            raise DataError(f"cannot write the dataset into {folder}: {err.strerror}") from None

    def _pwrite(self, data: np.ndarray, offset: int) -> None:
        pwrite_all(self.fd, np.ascontiguousarray(data), offset)

    @property
    def rows(self) -> FileRows:
        """Where the pixel rows go, by position: any process can write any block (`image_folder.decode`)."""
        return FileRows(str(self.path), self.head, self.row_bytes)

    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Rows start… of the stored order (block (B, C, H, W) of the file's dtype); any thread, any order."""
        if block.dtype != self.dtype or tuple(block.shape[1:]) != self.shape[1:]:
            raise ValueError(f"a block of {block.dtype} {block.shape} does not fit {self.dtype} {self.shape}")
        self._pwrite(block, self.head + start * self.row_bytes)

    def finish(self) -> tuple[Path, str]:
        """Hash the rows as written, write the real header, fsync: (the finished temporary file, its hash)."""
        h = _hasher(self.shape, self.dtype, self.y is not None)
        buffer = bytearray(HASH_CHUNK)  # read back in chunks: the file's pages stay page cache, not this process's
        left, pos = self.shape[0] * self.row_bytes, self.head
        while left:
            got = os.preadv(self.fd, [memoryview(buffer)[:min(left, HASH_CHUNK)]], pos)
            if got <= 0:
                raise OSError("the dataset file ended early")
            h.update(memoryview(buffer)[:got])
            left, pos = left - got, pos + got
        digest = _finish_hash(h, self.y, self.class_names)
        self.meta["hash"] = digest
        header = _header_bytes(self.tensors, self.meta)
        assert len(header) == self.head, "the header changed length"
        os.pwrite(self.fd, header, 0)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        return self.path, digest

    def abort(self) -> None:
        """Drop the temporary file (a cancelled or failed registration leaves nothing behind)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)


def _extras_digest(tensors) -> str:
    """SHA-256 of the tensors after the pixels and labels (source positions, names): the content hash does not
    cover them, this does, so a damaged byte anywhere in the file is found."""
    h = hashlib.sha256()
    for value in tensors:
        h.update(memoryview(np.ascontiguousarray(value)).cast("B"))
    return h.hexdigest()


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename a finished file to its name (its hash), durably."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ---------------------------------------------------------------- reading

def read_header(path: Path) -> tuple[dict, dict, int]:
    """(the dataset's JSON record, the tensors' entries, where the data starts) of a stored dataset file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n <= MAX_HEADER:
            raise ValueError("not a dataset file")
        header = json.loads(f.read(n))
    meta = json.loads(header.pop("__metadata__")[KEY])
    if meta.get("format_version") not in (1, FORMAT):
        raise ValueError(f"unknown dataset format {meta.get('format_version')!r}")
    return meta, header, 8 + n


def class_names_of(meta: dict) -> tuple[str, ...] | None:
    """The class names a dataset's record keeps (None: numbered classes, as in files stored before names)."""
    names = meta.get("class_names")
    return None if names is None else tuple(str(n) for n in names)


_NUMPY = {"U8": np.uint8, "F32": np.float32, "I64": np.int64}
_VERIFIED: set[tuple] = set()  # (path, size, mtime) of files whose hash this process has checked
_VERIFIED_LOCK = threading.Lock()


def read(path: Path, digest: str) -> tuple[ArrayData, dict]:
    """(the images, labels, class names and split, the JSON record) of the stored dataset at `path`, checked
    against `digest` once per process and file version. Format 2 is memory-mapped (copy-on-write: nothing is
    read until used, nothing is ever written back); format 1 is read whole. Raises ValueError when damaged."""
    meta, header, start = read_header(path)
    class_names = class_names_of(meta)
    if meta["format_version"] == 1:
        return _read_format_1(path, meta, class_names, digest), meta
    size = path.stat().st_size
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if start + end != size:
        raise ValueError(f"the file holds {size:,} bytes, its header describes {start + end:,}")

    def tensor(name: str, copy: bool) -> np.ndarray | None:
        entry = header.get(name)
        if entry is None:
            return None
        begin, stop = entry["data_offsets"]
        dtype, shape = np.dtype(_NUMPY[entry["dtype"]]), tuple(entry["shape"])
        if stop - begin != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"tensor {name} has the wrong size")
        if stop == begin:
            return np.zeros(shape, dtype)
        mapped = np.memmap(path, dtype=dtype, mode="c", offset=start + begin, shape=shape)
        return np.array(mapped) if copy else mapped

    x, y = tensor("x", copy=False), tensor("y", copy=True)
    if x is None or x.ndim != 4 or list(x.shape[1:]) != list(meta["image_shape"]):
        raise ValueError("its images do not match its record")
    blob = tensor("names", copy=True)
    arrays = ArrayData(x=x, y=y, class_names=class_names, n_test=int(meta["n_test"]),
                       source_index=tensor("source_index", copy=True),
                       names=None if blob is None else tuple(bytes(blob).decode().split("\0")))
    key = (str(path), size, path.stat().st_mtime_ns)
    with _VERIFIED_LOCK:
        known = key in _VERIFIED
    if not known:
        if content_hash(arrays) != digest:
            raise ValueError("its content does not match its hash")
        extras = [v for v in (arrays.y, arrays.source_index, blob) if v is not None]
        if _extras_digest(extras) != meta.get("extras_sha256"):
            raise ValueError("its labels, source positions or names do not match their checksum")
        with _VERIFIED_LOCK:
            _VERIFIED.add(key)
    return arrays, meta


def _read_format_1(path: Path, meta: dict, class_names, digest: str) -> ArrayData:
    import safetensors.numpy

    arrays = safetensors.numpy.load(path.read_bytes())
    data = ArrayData(x=arrays["x"], y=arrays.get("y"), class_names=class_names)
    if list(data.x.shape[1:]) != list(meta["image_shape"]) or content_hash_v1(data) != digest:
        raise ValueError("its content does not match its hash")
    return data


def split_rows(arrays: ArrayData) -> tuple[np.ndarray, int]:
    """(stored order, n_test) of in-memory arrays: the split order, or their own order when they are stored ones."""
    if arrays.n_test is not None:
        return np.arange(len(arrays.x)), arrays.n_test
    return split_order(len(arrays.x))
