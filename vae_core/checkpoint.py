"""One `.safetensors` file per model: the weights, plus JSON (configs, dataset, history, format version,
library versions) in the header's metadata. Loading parses JSON and raw tensors only — never a pickle.
Writes are atomic: a temporary file in the same folder, fsync, then rename.
"""
from __future__ import annotations

import json
import os
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig
from .files import atomic_write
from .model import VAE

FORMAT_VERSION = 1
METADATA_KEY = "vae_core"
SUFFIX = ".safetensors"
MAX_CHECKPOINT_BYTES = 512 << 20
MAX_HEADER_BYTES = 100 << 20


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message says why."""


class CheckpointExistsError(CheckpointError):
    """A save would replace an existing file and overwriting was not asked for."""


@dataclass
class Checkpoint:
    model: VAE
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # anything else a caller wants kept (notes, evaluation…)
    versions: dict = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def safe_name(name: str) -> str:
    """A file stem that cannot leave its folder: NFKC-normalised, only [A-Za-z0-9._-], no leading dot."""
    if not isinstance(name, str):
        raise CheckpointError("a checkpoint name must be text")
    stem = unicodedata.normalize("NFKC", name).strip()
    if stem.endswith(SUFFIX):
        stem = stem[: -len(SUFFIX)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip(".-_")[:80]
    if not stem:
        raise CheckpointError(f"{name!r} is not a usable checkpoint name: use letters, digits, '-', '_' or '.'")
    return stem


def checkpoint_path(name: str, root: str | os.PathLike) -> Path:
    """`root/NAME.safetensors` for a user-chosen name, guaranteed to be inside `root`."""
    root = Path(root).resolve()
    path = (root / f"{safe_name(name)}{SUFFIX}").resolve()
    if path.parent != root:
        raise CheckpointError(f"{name!r} would leave the checkpoint folder")
    return path


def _versions() -> dict:
    return {"vae_core": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
            "numpy": np.__version__}


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The checkpoint as safetensors bytes (what `save` writes and the app's download button offers)."""
    meta = {"format_version": FORMAT_VERSION, "model_config": ckpt.config.to_dict(),
            "objective_config": ckpt.objective.to_dict(), "train_config": ckpt.train.to_dict(),
            "dataset": ckpt.dataset, "history": ckpt.history, "extra": ckpt.extra, "versions": _versions()}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in ckpt.model.state_dict().items()}
    return st_save(tensors, metadata={METADATA_KEY: json.dumps(meta, allow_nan=False)})


def save(path: str | os.PathLike, ckpt: Checkpoint, *, overwrite: bool = False) -> Path:
    """Write atomically (`files.atomic_write`). Without `overwrite`, an existing file is never replaced
    (CheckpointExistsError), even when two writers race for the same name."""
    path = Path(path)
    try:
        blob = to_bytes(ckpt)
    except ValueError as err:  # e.g. NaN in the history, which JSON cannot hold
        raise CheckpointError(f"cannot serialise the checkpoint: {err}") from None
    try:
        return atomic_write(path, blob, overwrite=overwrite)
    except FileExistsError:
        raise CheckpointExistsError(f"{path.name} already exists; choose another name") from None


def peek(path: str | os.PathLike) -> dict:
    """A checkpoint file's metadata (configs, dataset, history, extra) read from its header alone, without
    its weights: what listings and a sweep's resume check need. Raises CheckpointError like `load`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                head += f.read(min(n, MAX_HEADER_BYTES + 1))
    except OSError as err:
        raise CheckpointError(f"cannot open {path.name}: {err.strerror}") from None
    return _read_metadata(head, path.name)


def load(path: str | os.PathLike, device="cpu") -> Checkpoint:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f"cannot open {path.name}: {err.strerror}") from None
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path.name} is {size >> 20} MiB; checkpoints are limited to "
                              f"{MAX_CHECKPOINT_BYTES >> 20} MiB")
    return from_bytes(path.read_bytes(), path.name, device=device)


def from_bytes(blob: bytes, name: str = "checkpoint", device="cpu") -> Checkpoint:
    """Parse and validate a checkpoint held in memory (an upload, or a file's bytes)."""
    if len(blob) > MAX_CHECKPOINT_BYTES:  # the same limit as `load`, whatever the server's upload limit
        raise CheckpointError(f"{name} is {len(blob) / 2**20:.1f} MiB; checkpoints are limited to "
                              f"{MAX_CHECKPOINT_BYTES >> 20} MiB")
    meta = _read_metadata(blob, name)
    try:
        tensors = st_load(blob)
    except Exception as err:  # safetensors raises its own SafetensorError for corrupt data
        raise CheckpointError(f"{name}: the tensor data is corrupt ({err})") from None
    try:
        model_cfg = ModelConfig.from_dict(meta["model_config"])
        objective = ObjectiveConfig.from_dict(meta.get("objective_config", {}))
        train = TrainConfig.from_dict(meta.get("train_config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{name}: invalid configuration: {err}") from None
    with torch.device("meta"):  # shapes only: a few bytes of JSON asking for a huge model allocate nothing
        skeleton = VAE(model_cfg)
    _check_tensors(skeleton, tensors, name)  # after this the model is no larger than the file's tensors
    model = VAE(model_cfg)
    model.load_state_dict(tensors)
    model.to(device).eval()
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{name}: the training history must be a list of records")
    dataset = meta.get("dataset", {})
    if not isinstance(dataset, dict):
        raise CheckpointError(f"{name}: the dataset description must be a JSON object")
    return Checkpoint(model=model, objective=objective, train=train, dataset=dataset, history=history,
                      extra=meta.get("extra", {}) or {}, versions=meta.get("versions", {}) or {})


def _read_metadata(blob: bytes, name: str) -> dict:
    if len(blob) == 0:
        raise CheckpointError(f"{name} is empty")
    if len(blob) < 8:
        raise CheckpointError(f"{name} is too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(blob):
        raise CheckpointError(f"{name} is not a safetensors file, or it is truncated")
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{name} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is not a safetensors file (its header is not a JSON object)")
    raw_meta = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw_meta is None:
        raise CheckpointError(f"{name} is a safetensors file but not a VAE checkpoint of this app "
                              f"(no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(raw_meta)
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{name}: the '{METADATA_KEY}' metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{name}: the '{METADATA_KEY}' metadata must be a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{name} has format version {version!r}; this app reads version {FORMAT_VERSION}. "
                              "Update the app, or retrain the model.")
    if "model_config" not in meta:
        raise CheckpointError(f"{name}: the metadata has no model_config")
    return meta


def _check_tensors(model: VAE, tensors: dict[str, torch.Tensor], name: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name}: the weights do not match its configuration (missing: "
                              f"{', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})")
    for key, ref in expected.items():
        t = tensors[key]
        if t.shape != ref.shape:
            raise CheckpointError(f"{name}: weight {key} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
        if not t.is_floating_point():
            raise CheckpointError(f"{name}: weight {key} has dtype {t.dtype}, expected floating point")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{name}: weight {key} contains NaN or infinite values")
