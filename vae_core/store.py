"""The workspace, `$VAE_HOME`: one folder holding everything a user makes.

    $VAE_HOME/datasets/<sha256>.safetensors   user datasets, stored once under their content hash
    $VAE_HOME/models/<name>.safetensors       models saved under a name
    $VAE_HOME/runs/<run id>/                  recorded runs: run.json (+ model.safetensors)
    $VAE_HOME/sweeps/<name>/                  collapse-lab sweeps: sweep.json + one checkpoint per run

`$VAE_HOME` defaults to the platform's per-user data folder (platformdirs: ~/.local/share/vae-explorer on
Linux, ~/Library/Application Support/vae-explorer on macOS, %LOCALAPPDATA%\\vae-explorer on Windows) and is
read at call time. The shipped models and sweeps in the source tree's `checkpoints/` are read-only: nothing
here writes there. Every write is atomic (`files.atomic_write`); nothing is ever unpickled.

A dataset's content hash is the SHA-256 of its images as float32 in [0, 1] (N, C, H, W), its labels and its
class names when it has them (an image folder's class folders), so the same images give the same hash whether
they came as .npz, .npy, .csv, a folder or a .zip; a checkpoint trained on them records the hash
(`Dataset.info`), and any session or the CLI finds the data again through it. Class names are kept in the stored
file's header and come back with the images.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import platformdirs
import safetensors.numpy
import torch

from . import checkpoint as ckpt_io
from . import locations
from . import replay
from .data import ArrayData, DataError, Dataset, check_image_count, from_arrays, load_dataset
from .files import atomic_write

ENV_HOME = "VAE_HOME"
APP_NAME = "vae-explorer"
DATASET_FORMAT = 1
DATASET_KEY = "vae_core_dataset"
DATASETS_CAP_ENV = "VAE_DATASETS_MAX_MB"
DATASETS_CAP_MB = 4096  # least recently used user datasets are removed past this total


def home() -> Path:
    """The workspace folder: `$VAE_HOME`, else the platform's per-user data folder."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class DataRef:
    """Where a run's images come from: a built-in dataset by name, or a user's dataset in the workspace by
    content hash (`name` is then the original file name). Optional: the first n_train / n_test images only,
    and a class whose training images are left out (the held-out-class experiment)."""

    name: str
    hash: str | None = None
    n_train: int = 0
    n_test: int = 0
    exclude_class: int | None = None

    @property
    def builtin(self) -> bool:
        return self.hash is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DataRef":
        return cls(**{k: data[k] for k in ("name", "hash", "n_train", "n_test", "exclude_class") if k in data})

    @classmethod
    def from_info(cls, info: dict) -> "DataRef":
        """The reference a checkpoint's dataset record (`Dataset.info`) points back to."""
        return cls(name=str(info.get("name", "")), hash=info.get("hash") or None)


@dataclass(frozen=True)
class StoredDataset:
    """What the workspace knows about a stored user dataset (read from its file's header)."""

    hash: str
    file_name: str
    n_images: int
    image_shape: tuple[int, int, int]
    n_classes: int
    size_bytes: int
    created: str
    class_names: tuple[str, ...] | None = None

    @property
    def short(self) -> str:
        return self.hash[:12]


def content_hash(arrays: ArrayData) -> str:
    """SHA-256 of the images as float32 (N, C, H, W) in [0, 1], of the labels and of the class names when there
    are any (without them the hash is what it always was): the dataset's identity."""
    x = np.ascontiguousarray(arrays.x, dtype=np.float32)
    h = hashlib.sha256(b"vae_core dataset v1\n")
    h.update(json.dumps({"shape": list(x.shape), "labels": arrays.y is not None}).encode())
    h.update(memoryview(x).cast("B"))
    if arrays.y is not None:
        h.update(memoryview(np.ascontiguousarray(arrays.y, dtype=np.int64)).cast("B"))
    if arrays.class_names is not None:
        h.update(json.dumps({"class_names": list(arrays.class_names)}).encode())
    return h.hexdigest()


def _as_stored_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 when every value is exactly k/255 (images that came as 8-bit: a quarter of the space and the same
    float32 values back), else the float32 values themselves."""
    u8 = np.rint(x * 255).astype(np.uint8)
    back = u8.astype(np.float32)
    np.divide(back, np.float32(255.0), out=back)  # exactly what data.to_unit_range computes
    return u8 if np.array_equal(back, x) else np.ascontiguousarray(x, dtype=np.float32)


def _is_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class Workspace:
    """The folders of one workspace root. Cheap to create: nothing is read or made until it is needed."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else home()

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def sweeps_dir(self) -> Path:
        return self.root / "sweeps"

    # ------------------------------------------------------------ datasets

    def dataset_path(self, digest: str) -> Path:
        if not _is_hash(str(digest)):
            raise DataError(f"{digest!r} is not a dataset hash")
        return self.datasets_dir / f"{digest}.safetensors"

    def put_dataset(self, arrays: ArrayData, file_name: str) -> StoredDataset:
        """Store a validated user dataset under its content hash, once: storing the same images again only
        refreshes its place in the LRU order, or replaces a copy found damaged. Returns its record."""
        file_name = Path(str(file_name)).name or "dataset"
        check_image_count(file_name, len(arrays.x))
        digest = content_hash(arrays)
        path = self.dataset_path(digest)
        if path.is_file():
            try:
                self.load_arrays(digest)  # intact (it checks the hash, and marks it most recently used)
                return self.dataset_info(digest)
            except DataError:
                pass  # damaged: written again below
        n, c, h, w = arrays.x.shape
        meta = {"format_version": DATASET_FORMAT, "hash": digest, "file_name": file_name, "n_images": int(n),
                "image_shape": [int(c), int(h), int(w)],
                "n_classes": 0 if arrays.y is None else int(arrays.y.max()) + 1,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if arrays.class_names is not None:
            meta["class_names"] = list(arrays.class_names)
        tensors = {"x": _as_stored_pixels(arrays.x)}
        if arrays.y is not None:
            tensors["y"] = np.ascontiguousarray(arrays.y, dtype=np.int64)
        blob = safetensors.numpy.save(tensors, metadata={DATASET_KEY: json.dumps(meta)})
        atomic_write(path, blob, overwrite=True)  # a damaged earlier copy is replaced, never half-written
        self._evict_datasets(keep=digest)
        return self.dataset_info(digest)

    def dataset_info(self, digest: str) -> StoredDataset | None:
        """The record of a stored dataset, or None if it is absent or its file's header is unreadable."""
        path = self.dataset_path(digest)
        try:
            meta = _dataset_header(path)
            return StoredDataset(hash=meta["hash"], file_name=str(meta["file_name"]), n_images=int(meta["n_images"]),
                                 image_shape=tuple(int(v) for v in meta["image_shape"]),
                                 n_classes=int(meta["n_classes"]), size_bytes=path.stat().st_size,
                                 created=str(meta.get("created", "")), class_names=_class_names(meta))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def list_datasets(self) -> list[StoredDataset]:
        """Stored datasets, most recently used first."""
        paths = sorted(self.datasets_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if self.datasets_dir.is_dir() else []
        infos = [self.dataset_info(p.stem) for p in paths if _is_hash(p.stem)]
        return [i for i in infos if i is not None]

    def load_arrays(self, digest: str) -> tuple[ArrayData, str]:
        """(images, labels and class names, original file name) of a stored dataset, checked against its hash.
        Raises DataError saying what to do when it is missing or damaged."""
        path = self.dataset_path(digest)
        if not path.is_file():
            raise DataError(f"dataset {digest[:12]}… is not in the workspace ({self.datasets_dir})")
        what = f"the stored copy of dataset {digest[:12]}…"
        try:
            meta = _dataset_header(path)
            what = f"the stored copy of {meta['file_name']} (dataset {digest[:12]}…)"
            arrays = safetensors.numpy.load(path.read_bytes())
            x, y = arrays["x"], arrays.get("y")
            if x.dtype == np.uint8:
                x = x.astype(np.float32)
                np.divide(x, np.float32(255.0), out=x)  # the float32 values the hash was taken of
            data = ArrayData(x=x, y=y, class_names=_class_names(meta))
            if x.ndim != 4 or list(x.shape[1:]) != list(meta["image_shape"]) or content_hash(data) != digest:
                raise ValueError("its content does not match its hash")
        except Exception as err:  # noqa: BLE001 — OSError, bad JSON, and safetensors' own errors alike
            raise DataError(f"{what} is damaged ({err}); upload the file again to replace it") from None
        os.utime(path)  # most recently used
        return data, str(meta["file_name"])

    def _evict_datasets(self, keep: str) -> None:
        """Remove least recently used datasets while the folder is over its size cap (`$VAE_DATASETS_MAX_MB`)."""
        cap = float(os.environ.get(DATASETS_CAP_ENV, DATASETS_CAP_MB)) * 2**20
        files = sorted(self.datasets_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= cap:
                break
            if p.stem != keep:
                total -= p.stat().st_size
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------ models and sweeps

    def model_path(self, name: str) -> Path:
        """models/NAME.safetensors for a user-chosen name (sanitised; never leaves the folder)."""
        return ckpt_io.checkpoint_path(name, self.models_dir)

    def list_models(self) -> list[Path]:
        return _checkpoint_files(self.models_dir)

    def save_model(self, name: str, ckpt: ckpt_io.Checkpoint, *, overwrite: bool = False,
                   replay_of: Path | None = None) -> Path:
        """Save under a name. Names of shipped models are refused, so a name always means one model. The training
        replay beside the checkpoint `replay_of` (a run's), when there is one, goes beside the saved model."""
        path = self.model_path(name)
        if path.stem in {p.stem for p in shipped_models()}:
            raise ckpt_io.CheckpointError(f"{path.stem!r} is the name of a shipped model; choose another name")
        saved = ckpt_io.save(path, ckpt, overwrite=overwrite)
        source = None if replay_of is None else replay.path_for(replay_of)
        if source is not None and source.is_file():
            atomic_write(replay.path_for(saved), source.read_bytes(), overwrite=True)
        return saved

    def sweep_path(self, name: str) -> Path:
        """sweeps/NAME for a user-chosen name."""
        return self.sweeps_dir / ckpt_io.safe_name(name)

    def list_sweeps(self) -> list[Path]:
        return _sweep_folders(self.sweeps_dir)

    def find_model(self, name: str) -> tuple[str, Path] | None:
        """("shipped" | "saved", path) of the model called `name` (a name, never a path), or None."""
        if not isinstance(name, str) or not name or name != Path(name).name:
            return None
        for kind, files in (("shipped", shipped_models()), ("saved", self.list_models())):
            for path in files:
                if path.stem == name:
                    return kind, path
        return None


def _dataset_header(path: Path) -> dict:
    """The JSON record in a stored dataset's safetensors header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n <= 1 << 20:
            raise ValueError("not a dataset file")
        header = json.loads(f.read(n))
    meta = json.loads(header["__metadata__"][DATASET_KEY])
    if meta.get("format_version") != DATASET_FORMAT:
        raise ValueError(f"unknown dataset format {meta.get('format_version')!r}")
    return meta


def _class_names(meta: dict) -> tuple[str, ...] | None:
    """The class names a stored dataset's record keeps (None: numbered classes, as in files stored before names)."""
    names = meta.get("class_names")
    return None if names is None else tuple(str(n) for n in names)


def _checkpoint_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{ckpt_io.SUFFIX}") if p.is_file() and not p.name.startswith("."))


def _sweep_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/sweep.json")) if root.is_dir() else []


def shipped_models() -> list[Path]:
    """The models shipped in the source tree's checkpoints/ (read-only)."""
    return _checkpoint_files(locations.CHECKPOINT_DIR)


def shipped_sweeps() -> list[Path]:
    return _sweep_folders(locations.CHECKPOINT_DIR / "sweeps")


# ---------------------------------------------------------------- datasets on the device, shared by the process

_LOADED: OrderedDict[tuple, Dataset] = OrderedDict()
_LOADED_MAX = 4
_LOAD_LOCK = threading.Lock()


def load(ref: DataRef, device, workspace: Workspace | None = None, *, download: bool = False,
         arrays: tuple[ArrayData, str] | None = None) -> Dataset:
    """The dataset `ref` points to, on `device`: built-in ones by name (never downloading unless asked), user
    ones by hash from the workspace, or from `arrays` ((images, file name), shipped to a remote worker). The whole
    dataset is cached for the process (the few most recently used), so the app's pages and every run share one
    copy; the subset and held-out class are views of it."""
    device = torch.device(device)
    ws = workspace or Workspace()
    source = "" if ref.builtin else "shipped" if arrays is not None else str(ws.root)  # each workspace its own
    key = (ref.name if ref.builtin else ref.hash, str(device), source)
    with _LOAD_LOCK:
        data = _LOADED.get(key)
        if data is not None:
            _LOADED.move_to_end(key)
        else:
            if ref.builtin:
                data = load_dataset(ref.name, device, download=download, timeout=30)
            else:
                images, file_name = arrays if arrays is not None else ws.load_arrays(ref.hash)
                data = from_arrays(file_name, images, device=device, hash=ref.hash)
            _LOADED[key] = data
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
    data = data.subset(ref.n_train, ref.n_test)
    return data if ref.exclude_class is None else data.without_class(ref.exclude_class)
