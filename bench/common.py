"""Shared helpers for the benchmarks: timing, the machine's matmul peak, FLOP counts, JSON output, and many AppTest
sessions at once (also used by the tests)."""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from unittest.mock import MagicMock, patch

import torch
from streamlit.components.v2.component_manager import BidiComponentManager
from streamlit.runtime import Runtime
from streamlit.runtime.caching.storage.dummy_cache_storage import (
    MemoryCacheStorageManager,
)
from streamlit.runtime.dataframe_source_manager import DataframeSourceManager
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1.util import patch_config_options
from torch import nn

from vae_core.data import DataError, cache_dir, find_idx_files
from vae_core.model import VAE


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def emit(result: dict, as_json: bool) -> None:
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), **result}
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32s} {v}")


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def median_time(fn, repeat: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_gflops(m: int, k: int, n: int, repeat: int = 5) -> float:
    """Measured fp32 GFLOP/s of an (m, k) @ (k, n) product on the CPU."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    inner = max(1, int(2e9 // (2 * m * k * n)))  # ~2 GFLOP per timed call
    t = median_time(lambda: [a @ b for _ in range(inner)], repeat=repeat)
    return 2 * m * k * n * inner / t / 1e9


def linear_shapes(model: VAE) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def train_flops_per_image(model: VAE) -> float:
    """Matmul FLOPs to train on one image: forward 2·in·out per linear layer, backward 2·in·out for the
    weight gradient and 2·in·out for the input gradient (not needed by the first encoder layer)."""
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    total = 0.0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            f = 2 * module.in_features * module.out_features
            total += f + f + (0 if module is first else f)
    return total


def matmul_peak(model: VAE, batch: int) -> dict:
    """GFLOP/s of one large square product and of the model's own layer shapes at its batch size."""
    own = {f"{i}x{o}": round(gemm_gflops(batch, i, o), 1) for i, o in linear_shapes(model)}
    return {"square_2048": round(gemm_gflops(2048, 2048, 2048), 1), "layers": own}


def torchvision_fashion_root() -> Path:
    """A folder laid out as torchvision's FashionMNIST expects (raw, uncompressed IDX), made from the local
    copy that vae_core finds, so the tutorial's own loop runs offline."""
    files = find_idx_files("fashion-mnist")
    if files is None:
        raise DataError("Fashion-MNIST is not installed: apt install dataset-fashion-mnist (or set VAE_DATA_DIR)")
    root = cache_dir() / "torchvision"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        target = raw / path.name.removesuffix(".gz")
        if not target.exists():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


def max_relative_difference(a, b) -> float:
    """The largest |x − y| / max(|x|, |y|) over the numbers of two results of the same shape (dicts, lists,
    numbers); inf when their shapes or other values differ. Runs that differ only in how many threads torch uses
    can differ in the last bits: the order of a sum inside a matrix product depends on it."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((max_relative_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return max((max_relative_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        scale = max(abs(a), abs(b))
        return 0.0 if scale == 0 else abs(a - b) / scale
    return 0.0 if a == b else float("inf")


SAME_NUMBERS_RTOL = 1e-6  # what "the same numbers" means across executors (float32 rounding, not a different result)


CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # as the browser tests start it


def chromium_path() -> str | None:
    """Debian's Chromium (or `$VAE_CHROMIUM`), when it is there."""
    path = os.environ.get("VAE_CHROMIUM", "/usr/bin/chromium")
    return path if Path(path).exists() else None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def apptests_in_threads():
    """AppTest is made for one run at a time: every run installs a mock Runtime and a patched config.get_option
    and takes both away when it ends, pulling them from under runs still going in other threads (st.image and
    download buttons then fail with "Runtime hasn't been created"); keep a runtime and the patch for the block.
    Each run also compiles the scripts in its own ScriptCache, while a real server shares one, whose lock
    serialises compiling: CPython 3.11's AST constructor is not thread-safe ("SystemError: AST constructor
    recursion depth mismatch", python/cpython#106905), so compile under one lock here too. Custom components
    register with the runtime: the shared one has a real registry."""

    shared = MagicMock(spec=Runtime)
    shared.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    shared.dataframe_source_mgr = DataframeSourceManager()
    shared.cache_storage_manager = MemoryCacheStorageManager()
    shared.bidi_component_registry = BidiComponentManager()  # custom components (the Latent page's map) register here
    compiling, real_get_bytecode = threading.Lock(), ScriptCache.get_bytecode

    def get_bytecode(self, script_path):
        with compiling:
            return real_get_bytecode(self, script_path)

    with patch.object(ScriptCache, "get_bytecode", get_bytecode), \
            patch.object(Runtime, "instance", classmethod(lambda cls: cls._instance or shared)), \
            patch.object(Runtime, "exists", classmethod(lambda cls: True)), \
            patch_config_options({"global.appTest": True}):
        yield
