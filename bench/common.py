"""Shared helpers for the benchmarks: timing, the machine's matmul peak, FLOP counts, JSON output."""
from __future__ import annotations

import argparse
import gzip
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
