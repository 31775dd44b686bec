"""A shipped model's first pictures, stored beside its checkpoint so that a fresh server can show them before
torch has even loaded: the Overview's picture (encoder map beside decoder map) and a still of the Latent page's
map, as PNG bytes in `NAME.preview` (safetensors: two uint8 arrays and JSON facts; nothing is unpickled).

A preview names the SHA-256 of the checkpoint it was drawn from; one that does not match the checkpoint beside it
is ignored. The pictures are drawn by the same functions as the pages' own (`decoding.overview`,
`pictures.map_picture`), so the page replaces a preview with identical pixels once the model has loaded.
`python -m vae_core previews` writes them for the shipped models; tests/test_previews.py checks they are current.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as np_save

from .files import atomic_write

SUFFIX = ".preview"
FORMAT_VERSION = 1
MAX_PREVIEW_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Facts:
    """What the pages say about the model next to its pictures."""

    latent_dim: int
    n_classes: int  # a conditional VAE's classes, 0 otherwise
    class_names: list[str] | None
    n_test: int


@dataclass(frozen=True)
class Preview:
    overview_png: bytes
    latent_png: bytes
    checkpoint_sha256: str
    facts: Facts


def path_for(checkpoint_path: str | os.PathLike) -> Path:
    """`NAME.preview` beside `NAME.safetensors`."""
    return Path(checkpoint_path).with_suffix(SUFFIX)


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 — size and mtime key the cache
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256, computed once per version of the file (its size and modification time)."""
    stat = os.stat(path)
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


def to_bytes(preview: Preview) -> bytes:
    arrays = {"overview_png": np.frombuffer(preview.overview_png, np.uint8),
              "latent_png": np.frombuffer(preview.latent_png, np.uint8)}
    meta = {"format_version": FORMAT_VERSION, "checkpoint_sha256": preview.checkpoint_sha256,
            "facts": asdict(preview.facts)}
    return np_save(arrays, metadata={"preview": json.dumps(meta)})


def write(path: str | os.PathLike, preview: Preview) -> Path:
    return atomic_write(Path(path), to_bytes(preview), overwrite=True)


def read(path: str | os.PathLike) -> Preview | None:
    """The preview in `path`, or None when it is missing, too large or not a preview file."""
    try:
        if os.path.getsize(path) > MAX_PREVIEW_BYTES:
            return None
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads(f.metadata()["preview"])
            overview, latent = f.get_tensor("overview_png"), f.get_tensor("latent_png")
        facts = Facts(**meta["facts"])
        if meta["format_version"] != FORMAT_VERSION or overview.dtype != np.uint8 or latent.dtype != np.uint8:
            return None
        return Preview(overview.tobytes(), latent.tobytes(), str(meta["checkpoint_sha256"]), facts)
    except Exception:  # noqa: BLE001 — a missing, damaged or foreign file is simply no preview
        return None


def current(checkpoint_path: str | os.PathLike) -> Preview | None:
    """The preview beside a checkpoint when it was drawn from exactly that file, else None."""
    preview = read(path_for(checkpoint_path))
    if preview is None or preview.checkpoint_sha256 != file_sha256(checkpoint_path):
        return None
    return preview


def build(checkpoint_path: str | os.PathLike, device="cpu") -> Preview:
    """Draw the preview of a checkpoint on its (built-in) dataset's test set, as the pages draw them."""
    from . import checkpoint as ckpt_io  # noqa: PLC0415 — torch: only building needs it, reading must not
    from . import pictures, store
    from .decoding import latent_still, overview
    from .metrics import per_sample_scores

    ckpt = ckpt_io.load(checkpoint_path, device)
    data = store.load(store.DataRef.from_info(ckpt.dataset), device)
    labels = None if data.y_test is None else data.y_test.cpu().numpy()
    conditional = data.y_test if ckpt.config.n_classes else None
    mu = per_sample_scores(ckpt.model, data.x_test, conditional)["mu"]  # (N, d)
    facts = Facts(latent_dim=ckpt.config.latent_dim, n_classes=int(ckpt.config.n_classes or 0),
                  class_names=None if data.class_names is None else [str(c) for c in data.class_names],
                  n_test=len(mu))
    return Preview(overview_png=pictures.png_bytes(overview(ckpt.model, mu, labels, data.class_names)),
                   latent_png=pictures.png_bytes(latent_still(mu, labels, data.class_names)),
                   checkpoint_sha256=file_sha256(checkpoint_path), facts=facts)
