"""The workspace, `$VAE_HOME`: one folder holding everything a user makes.

    $VAE_HOME/datasets/<sha256>.safetensors   user datasets, stored once under their content hash
    $VAE_HOME/models/<name>.safetensors       models saved under a name
    $VAE_HOME/runs/<run id>/                  recorded runs: run.json (+ model.safetensors)
    $VAE_HOME/sweeps/<name>/                  collapse-lab sweeps: sweep.json + one checkpoint per run

`$VAE_HOME` defaults to the platform's per-user data folder (platformdirs: ~/.local/share/vae-explorer on
Linux, ~/Library/Application Support/vae-explorer on macOS, %LOCALAPPDATA%\\vae-explorer on Windows) and is
read at call time. The shipped models and sweeps in the source tree's `checkpoints/` are read-only: nothing
here writes there. Every write is atomic (`files.atomic_write`); nothing is ever unpickled.

A dataset is stored once under its content hash (`dataset_file.py`: the SHA-256 of its 8-bit pixels in split order,
its labels and its class names), so the same images give the same hash whether they came as .npz, .npy, .csv, a
folder or a .zip; a checkpoint trained on them records the hash (`Dataset.info`), and any session or the CLI finds
the data again through it. `register` streams a folder or zip of images into the workspace, decoding in parallel,
with progress and cancellation, never holding the pixels in memory; opening a stored dataset maps its file.

Who stored a dataset is kept beside it (`<sha256>.owners`: browser ids, or `SERVER` for the CLI). The folder's size
cap (`$VAE_DATASETS_MAX_MB`) and a visitor's quota (`$VAE_USER_MAX_MB`) are checked before anything is written: room
is made by removing that visitor's own least recently used datasets, never another's and never one a saved model or
a run was trained on; when that is not enough the upload is refused with a message saying why.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

from . import checkpoint as ckpt_io
from . import dataset_file, image_folder, locations, replay
from .array_files import read_array_file
from .data import Dataset, from_arrays, load_dataset
from .files import atomic_write
from .pixels import ArrayData, DataError, check_image_count, gib, split_order

ENV_HOME = "VAE_HOME"
APP_NAME = "vae-explorer"
DATASETS_CAP_ENV = "VAE_DATASETS_MAX_MB"
DATASETS_CAP_MB = 4096  # least recently used user datasets are removed past this total
USER_QUOTA_ENV = "VAE_USER_MAX_MB"  # each visitor's stored datasets at most this many MiB (unset: only the cap)
SERVER = "server"  # the owner of what the CLI (the server's owner) stores, and of data from before owners were kept


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


content_hash = dataset_file.content_hash
Progress = image_folder.Progress


def _stage(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A sub-task's progress mapped onto [start, end] of the whole."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


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

    @property
    def maps_dir(self) -> Path:
        """The latent maps of models over their datasets (`latent_map.MapCache`)."""
        return self.root / "maps"

    # ------------------------------------------------------------ datasets

    def dataset_path(self, digest: str) -> Path:
        if not _is_hash(str(digest)):
            raise DataError(f"{digest!r} is not a dataset hash")
        return self.datasets_dir / f"{digest}.safetensors"

    def register(self, source, file_name: str | None = None, *, image_size: int | None = None,
                 progress: Progress | None = None, owner: str = SERVER) -> StoredDataset:
        """Validate a user's file and store it under its content hash: a folder or .zip of images (a path, or the
        bytes or binary file of an upload named `file_name`) is decoded in parallel straight into the stored file,
        never held in memory; an array file (.npz, .npy, .csv) is read and stored. `progress(fraction, message)`
        follows it (headers, decoding, hashing) and may raise to cancel it: nothing is left behind then."""
        if file_name is None and isinstance(source, (str, os.PathLike)):
            file_name = Path(os.path.abspath(source)).name  # a folder given as "." or "pets/" still has a name
        name = Path(str(file_name or getattr(source, "name", "") or "dataset")).name
        if not image_folder.is_image_set(source, file_name):
            return self.put_dataset(read_array_file(source, file_name), name, owner=owner)
        if not isinstance(source, (str, os.PathLike)):  # an upload: a file, so that worker processes can read it
            with self._spooled(source) as path:
                return self.register(path, name, image_size=image_size, progress=progress, owner=owner)
        with image_folder.plan_images(source, file_name, image_size=image_size,
                                      progress=_stage(progress, 0.0, 0.15)) as plan:
            order, n_test = split_order(len(plan.files))
            names = plan.names
            writer = self._writer(plan.shape, np.uint8, name, None if plan.y is None else plan.y[order], order, n_test,
                                  plan.class_names, tuple(names[i] for i in order), owner)
            try:
                image_folder.decode(plan, writer.rows, order, progress=_stage(progress, 0.15, 0.95))
                if progress:
                    progress(0.95, "checking the stored images (their SHA-256)")
                return self._keep(*writer.finish(), owner)
            except BaseException:
                writer.abort()
                raise

    @contextlib.contextmanager
    def _spooled(self, source):
        """An uploaded zip (bytes or a binary file) as a hidden temporary file in `datasets/`, removed afterwards."""
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".zip", dir=self.datasets_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(source, (bytes, bytearray)):
                    f.write(source)
                else:
                    shutil.copyfileobj(source, f, 1 << 20)
            yield tmp
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_dataset(self, arrays: ArrayData, file_name: str, *, owner: str = SERVER) -> StoredDataset:
        """Store a user's images held in memory (`data.load_array_file`) under their content hash, once: storing the
        same images again only refreshes their place in the LRU order (and adds `owner` to theirs), or replaces a
        copy found damaged."""
        file_name = Path(str(file_name)).name or "dataset"
        check_image_count(file_name, len(arrays.x))
        digest = content_hash(arrays)
        if self._intact(digest):
            self._add_owner(digest, owner)
            return self.dataset_info(digest)
        order, n_test = dataset_file.split_rows(arrays)
        source = order if arrays.source_index is None else arrays.source_index[order]
        writer = self._writer(arrays.x.shape, arrays.x.dtype, file_name,
                              None if arrays.y is None else arrays.y[order], source, n_test, arrays.class_names,
                              None if arrays.names is None else tuple(arrays.names[i] for i in order), owner)
        try:
            step = max(1, (64 << 20) // max(1, arrays.x[0].nbytes))
            for start in range(0, len(order), step):
                writer.write_rows(start, np.ascontiguousarray(arrays.x[order[start:start + step]]))
            return self._keep(*writer.finish(), owner)
        except BaseException:
            writer.abort()
            raise

    def attach(self, arrays: ArrayData, file_name: str, expected: str, *, owner: str = SERVER) -> StoredDataset:
        """Store images uploaded for a model that recorded the hash `expected`, after checking they are those images:
        by today's hash, or by the hash of format 1 (models from before it), which then names them too."""
        digest = content_hash(arrays)
        if digest != expected and dataset_file.content_hash_v1(arrays) != expected:
            raise DataError(f"{file_name} holds other images than the ones this model was trained on (content hash "
                            f"{digest[:12]}…, the model expects {expected[:12]}…). Upload the original file.")
        stored = self.put_dataset(arrays, file_name, owner=owner)
        if stored.hash != expected:
            atomic_write(self._alias_path(expected), stored.hash.encode(), overwrite=True)
            self.dataset_path(expected).unlink(missing_ok=True)  # a damaged format-1 copy: replaced by the alias
        return stored

    def _writer(self, shape, dtype, file_name: str, y, source_index, n_test: int, class_names,
                names, owner: str) -> dataset_file.Writer:
        """A file for a new dataset in `datasets/` (labels, source positions and names in stored order), after
        checking the disk, the size cap and `owner`'s quota have room for it."""
        n, c, h, w = map(int, shape)
        need = n * (c * h * w * np.dtype(dtype).itemsize + 16)  # pixels, a label and a source position per image
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.datasets_dir).free
        if need > free:
            raise DataError(f"storing {file_name} needs {gib(need)} of disk in {self.datasets_dir}; "
                            f"{gib(free)} is free")
        self._make_room(need, owner, file_name)
        meta = {"file_name": file_name, "n_images": n, "image_shape": [c, h, w], "n_test": int(n_test),
                "n_classes": 0 if y is None else int(np.max(y)) + 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if class_names is not None:
            meta["class_names"] = list(class_names)
        return dataset_file.Writer(self.datasets_dir, shape, dtype, meta, y=y, class_names=class_names, names=names,
                                   source_index=np.asarray(source_index))

    def _keep(self, tmp: Path, digest: str, owner: str) -> StoredDataset:
        """Put a finished file in its place, unless an intact copy is there already, and add `owner` to its owners."""
        if self._intact(digest):
            tmp.unlink(missing_ok=True)
        else:
            dataset_file.move_into_place(tmp, self.dataset_path(digest))
        self._add_owner(digest, owner)
        return self.dataset_info(digest)

    # ------------------------------------------------------------ who stored what, and room for more

    def _owners_path(self, digest: str) -> Path:
        return self.dataset_path(digest).with_suffix(".owners")

    def dataset_owners(self, digest: str) -> set[str]:
        """Who stored dataset `digest` (`SERVER` for one stored before owners were kept)."""
        try:
            owners = json.loads(self._owners_path(digest).read_text())
            return {str(o) for o in owners} if isinstance(owners, list) else {SERVER}
        except (OSError, ValueError):
            return {SERVER}

    def _add_owner(self, digest: str, owner: str) -> None:
        path = self._owners_path(digest)
        owners = self.dataset_owners(digest) if path.exists() else set()
        if owner not in owners:
            atomic_write(path, json.dumps(sorted(owners | {owner})).encode(), overwrite=True)

    def datasets_in_use(self) -> set[str]:
        """Hashes of the datasets that saved models, runs and sweeps in this workspace were trained on."""
        checkpoints = [*self.list_models(), *self.runs_dir.glob("*/*.safetensors"),
                       *self.sweeps_dir.glob("*/*.safetensors")]
        used = set()
        for path in checkpoints:
            try:
                digest = (ckpt_io.peek(path).get("dataset") or {}).get("hash")
            except ckpt_io.CheckpointError:
                continue
            if digest:
                used.add(self.resolve(str(digest)))
        return used

    def _make_room(self, need: int, owner: str, file_name: str) -> None:
        """Before storing `need` bytes for `owner`: remove `owner`'s own least recently used datasets until the folder's
        cap and `owner`'s quota hold them (the CLI, `SERVER`, may remove anyone's), never one in use; DataError when
        that cannot make room."""
        cap = float(os.environ.get(DATASETS_CAP_ENV, DATASETS_CAP_MB)) * 2**20
        quota = os.environ.get(USER_QUOTA_ENV)
        quota = float(quota) * 2**20 if quota and owner != SERVER else None
        files = sorted(self.datasets_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        sizes = {p: p.stat().st_size for p in files}
        owners = {p: self.dataset_owners(p.stem) for p in files}
        total = sum(sizes.values())
        mine = sum(size for p, size in sizes.items() if owner in owners[p])
        over = lambda: total + need > cap or (quota is not None and mine + need > quota)  # noqa: E731
        if over():
            in_use = self.datasets_in_use()
            for p in files:
                if not over():
                    break
                if p.stem in in_use or not (owners[p] <= {owner} or owner == SERVER):
                    continue
                p.unlink(missing_ok=True)
                self._owners_path(p.stem).unlink(missing_ok=True)
                total -= sizes[p]
                mine -= sizes[p] if owner in owners[p] else 0
        if quota is not None and mine + need > quota:
            raise DataError(f"storing {file_name} ({gib(need)}) would take your stored datasets past this server's "
                            f"{gib(quota)} per user (`$VAE_USER_MAX_MB`); what you stored earlier is still used by "
                            "saved models or runs")
        if total + need > cap:
            raise DataError(f"storing {file_name} ({gib(need)}) would take the workspace's datasets past its "
                            f"{gib(cap)} (`$VAE_DATASETS_MAX_MB`), and the space is held by other users' data or data "
                            "that models were trained on; ask the server's owner to raise the limit")

    def _intact(self, digest: str) -> bool:
        """Whether the dataset `digest` is stored and intact (reading it marks it most recently used)."""
        if not self.dataset_path(digest).is_file():
            return False
        try:
            self.load_arrays(digest)
            return True
        except DataError:
            return False

    def _alias_path(self, digest: str) -> Path:
        return self.dataset_path(digest).with_suffix(".alias")

    def resolve(self, digest: str) -> str:
        """The hash a dataset is stored under: `digest` itself, or the one a format-1 hash was attached to."""
        alias = self._alias_path(digest)
        if alias.is_file():
            target = alias.read_text().strip()
            if _is_hash(target):
                return target
        return digest

    def dataset_info(self, digest: str) -> StoredDataset | None:
        """The record of a stored dataset, or None if it is absent or its file's header is unreadable."""
        path = self.dataset_path(self.resolve(digest))
        try:
            meta, _, _ = dataset_file.read_header(path)
            return StoredDataset(hash=meta["hash"], file_name=str(meta["file_name"]), n_images=int(meta["n_images"]),
                                 image_shape=tuple(int(v) for v in meta["image_shape"]),
                                 n_classes=int(meta["n_classes"]), size_bytes=path.stat().st_size,
                                 created=str(meta.get("created", "")), class_names=dataset_file.class_names_of(meta))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def list_datasets(self) -> list[StoredDataset]:
        """Stored datasets, most recently used first."""
        paths = sorted(self.datasets_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if self.datasets_dir.is_dir() else []
        infos = [self.dataset_info(p.stem) for p in paths if _is_hash(p.stem)]
        return [i for i in infos if i is not None]

    def load_arrays(self, digest: str) -> tuple[ArrayData, str]:
        """(images, labels, class names and split, original file name) of a stored dataset, memory-mapped, checked
        against its hash (once per process). Raises DataError saying what to do when it is missing or damaged."""
        path = self.dataset_path(self.resolve(digest))
        if not path.is_file():
            raise DataError(f"dataset {digest[:12]}… is not in the workspace ({self.datasets_dir})")
        what = f"the stored copy of dataset {digest[:12]}…"
        try:
            meta, _, _ = dataset_file.read_header(path)
            what = f"the stored copy of {meta['file_name']} (dataset {digest[:12]}…)"
            data, _ = dataset_file.read(path, path.stem)
        except Exception as err:  # noqa: BLE001 — OSError, bad JSON, and safetensors' own errors alike
            raise DataError(f"{what} is damaged ({err}); upload the file again to replace it") from None
        os.utime(path)  # most recently used
        return data, str(meta["file_name"])

    # ------------------------------------------------------------ models and sweeps

    def model_path(self, name: str) -> Path:
        """models/NAME.safetensors for a user-chosen name (sanitised; never leaves the folder)."""
        return ckpt_io.checkpoint_path(name, self.models_dir)

    def list_models(self) -> list[Path]:
        return _checkpoint_files(self.models_dir)

    def save_model(self, name: str, ckpt: ckpt_io.Checkpoint, *, overwrite: bool = False,
                   replay_of: Path | None = None, owner: str = SERVER) -> Path:
        """Save under a name, as `owner` (recorded in the checkpoint). Names of shipped models are refused, so a
        name always means one model, and `overwrite` replaces only a model `owner` saved (the CLI, `SERVER`, may
        replace any). The training replay beside the checkpoint `replay_of` (a run's), when there is one, goes
        beside the saved model."""
        path = self.model_path(name)
        if path.stem in {p.stem for p in shipped_models()}:
            raise ckpt_io.CheckpointError(f"{path.stem!r} is the name of a shipped model; choose another name")
        if overwrite and owner != SERVER and path.exists() and self.model_owner(path) != owner:
            raise ckpt_io.CheckpointExistsError(f"{path.stem!r} was saved by another user of this server, and only "
                                                "they can replace it; choose another name")
        ckpt = dataclasses.replace(ckpt, extra={**ckpt.extra, "saved_by": owner})
        saved = ckpt_io.save(path, ckpt, overwrite=overwrite)
        source = None if replay_of is None else replay.path_for(replay_of)
        if source is not None and source.is_file():
            atomic_write(replay.path_for(saved), source.read_bytes(), overwrite=True)
        return saved

    def model_owner(self, path: Path) -> str:
        """Who saved the model at `path` (`SERVER` for the CLI, and for models saved before owners were kept)."""
        try:
            return str((ckpt_io.peek(path).get("extra") or {}).get("saved_by", SERVER))
        except ckpt_io.CheckpointError:
            return SERVER

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

    def find_sweep_run(self, name: str) -> tuple[str, Path] | None:
        """("shipped" | "saved", checkpoint) of the run called `SWEEP/RUN` (a sweep's folder name and a run's file
        stem, each a safe name, never a path), shipped sweeps first, or None."""
        parts = name.split("/") if isinstance(name, str) else []
        try:
            if len(parts) != 2 or any(ckpt_io.safe_name(p) != p for p in parts):
                return None
        except ckpt_io.CheckpointError:
            return None
        sweep, run = parts
        for kind, root in (("shipped", shipped_sweeps_dir()), ("saved", self.sweeps_dir)):
            path = root / sweep / f"{run}{ckpt_io.SUFFIX}"
            if root / sweep in _sweep_folders(root) and path.is_file():
                return kind, path
        return None


def _checkpoint_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{ckpt_io.SUFFIX}") if p.is_file() and not p.name.startswith("."))


def _sweep_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/sweep.json")) if root.is_dir() else []


def shipped_models() -> list[Path]:
    """The models shipped in the source tree's checkpoints/ (read-only)."""
    return _checkpoint_files(locations.CHECKPOINT_DIR)


def shipped_sweeps_dir() -> Path:
    """The sweeps shipped in the source tree's checkpoints/ (read-only), read at call time."""
    return locations.CHECKPOINT_DIR / "sweeps"


def shipped_sweeps() -> list[Path]:
    return _sweep_folders(shipped_sweeps_dir())


# ---------------------------------------------------------------- datasets on the device, shared by the process

_LOADED: OrderedDict[tuple, Dataset] = OrderedDict()
_LOADED_MAX = 4
_LOAD_LOCK = threading.Lock()


def _load_key(ref: DataRef, device, ws: Workspace, shipped: bool = False) -> tuple:
    source = "" if ref.builtin else "shipped" if shipped else str(ws.root)  # each workspace its own
    return ref.name if ref.builtin else ref.hash, str(torch.device(device)), source


def is_loaded(ref: DataRef, device, workspace: Workspace | None = None) -> bool:
    """Whether `load` has the dataset `ref` points to in its cache (it will answer at once)."""
    with _LOAD_LOCK:
        return _load_key(ref, device, workspace or Workspace()) in _LOADED


def load(ref: DataRef, device, workspace: Workspace | None = None, *, download: bool = False,
         arrays: tuple[ArrayData, str] | None = None) -> Dataset:
    """The dataset `ref` points to, on `device`: built-in ones by name (never downloading unless asked), user
    ones by hash from the workspace, or from `arrays` ((images, file name), shipped to a remote worker). The whole
    dataset is cached for the process (the few most recently used), so the app's pages and every run share one
    copy; the subset and held-out class are views of it."""
    device = torch.device(device)
    ws = workspace or Workspace()
    key = _load_key(ref, device, ws, shipped=arrays is not None)
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
