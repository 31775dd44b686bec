"""Where the library finds what it reads but never writes, without importing torch (a fresh server's first page
uses it before torch has loaded): the shipped checkpoints folder, and the built-in datasets' IDX files (MNIST and
Fashion-MNIST in a data folder, the download cache or Debian's `dataset-fashion-mnist` package)."""
from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"  # shipped models: read-only
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def cache_dir() -> Path:
    return Path(os.environ.get("VAE_CACHE_DIR", Path.home() / ".cache" / "vae_core"))


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where MNIST-style IDX files are looked for, in order."""
    dirs: list[Path] = []
    roots = [Path(p) for p in (data_dir, os.environ.get("VAE_DATA_DIR")) if p]
    roots.append(cache_dir())
    for root in roots:
        dirs += [root / name, root / TORCHVISION_FOLDER[name] / "raw", root]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def find_idx_files(name: str, data_dir=None) -> dict[str, Path] | None:
    for folder in candidate_dirs(name, data_dir):
        found = {}
        for key, stem in IDX_FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def available_builtin(data_dir=None) -> dict[str, bool]:
    """Which built-in datasets load without a download."""
    return {"digits": True, **{n: find_idx_files(n, data_dir) is not None for n in TORCHVISION_FOLDER}}
