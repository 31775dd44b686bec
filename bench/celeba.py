"""CelebA-sized data end to end, as a user runs it: register a zip of 200,000 colour 64×64 JPEGs, train the default
conv model for one epoch, evaluate it — each step a separate `python -m vae_core …` process, its wall time and peak
resident memory measured (GNU time's "Maximum resident set size", read here from the child's rusage) — beside the
dataset's 8-bit size and the epoch's FLOP floor on this machine.

    python -m bench.celeba [--n 200000] [--home DIR] [--json]

The images come from `bench.faces` (made once, kept beside the workspace). The workspace is `--home` (default: a
folder in the system's temporary directory, kept so that `bench.map` can reuse the stored dataset and the model).
On a machine with CUDA the CLI trains there (the dataset then lives on the GPU as uint8, batches are made floats
there, and nothing waits for the GPU within an epoch); the FLOP floor is then against the GPU's own matmul rate.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vae_core import checkpoint as C
from vae_core.config import ModelConfig, TrainConfig
from vae_core.model import VAE
from vae_core.objectives import elbo, elbo_terms
from vae_core.train import make_optimizer

from .common import emit, gemm_gflops, log, parser
from .faces import write_zip

MODEL = "celeba-conv"


def cli(args: list[str], home: Path) -> dict:
    """Run `python -m vae_core ARGS` in a fresh process: its wall time, its peak resident memory (MiB: the largest
    of the process and the worker processes it waited for, what `/usr/bin/time -v` reports) and its last line."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "vae_core", *args], stdout=out, stderr=err,
                                env=dict(os.environ, VAE_HOME=str(home)))
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().strip(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {stderr[-2000:]}")
    log(f"  {' '.join(args[:3])}: {seconds:.1f} s, peak {usage.ru_maxrss / 1024:,.0f} MiB")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "last_line": stdout.splitlines()[-1] if stdout else ""}


def step_flops(cfg: ModelConfig, batch: int, device: torch.device) -> float:
    """FLOPs of one training step (forward and backward) of VAE(cfg) on a batch, counted by torch."""
    model = VAE(cfg).to(device)
    opt = make_optimizer(model, 1e-3)
    x = torch.randint(0, 256, (batch, *cfg.image_shape), dtype=torch.uint8, device=device)
    with FlopCounterMode(display=False) as counter:
        loss = elbo(elbo_terms(model, x)).total
        opt.zero_grad()
        loss.backward()
    return float(counter.get_total_flops())


def gpu_matmul_tflops(device: torch.device) -> float:
    a = torch.randn(8192, 8192, device=device)
    for _ in range(2):
        a @ a
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "vae-bench-celeba")
    args = p.parse_args()
    home = args.home
    home.mkdir(parents=True, exist_ok=True)
    zip_path = home.parent / f"faces-{args.n // 1000}k.zip"
    if not zip_path.exists():
        log(f"making {zip_path} ({args.n:,} faces)")
        write_zip(zip_path, args.n)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"CelebA-shaped data on {device}: {args.n:,} images, workspace {home}")
    register = cli(["datasets", "--add", str(zip_path)], home)
    train = cli(["train", "--dataset", zip_path.name, "--arch", "conv", "--latent-dim", "2", "--epochs", "1",
                 "--out", MODEL, "--overwrite"], home)
    evaluate = cli(["evaluate", MODEL, "--json"], home)
    record = C.load(home / "models" / f"{MODEL}.safetensors").history[0]
    cfg = C.load(home / "models" / f"{MODEL}.safetensors").config
    batch, n_train = TrainConfig().batch_size, round(args.n * 0.8)
    flops = step_flops(cfg, batch, device) * (n_train / batch)
    rate = gpu_matmul_tflops(device) * 1e3 if device.type == "cuda" else gemm_gflops(2048, 2048, 2048)
    floor = flops / (rate * 1e9)
    result = {
        "device": str(device), "images": args.n, "image_shape": list(cfg.image_shape),
        "uint8_gib": round(args.n * cfg.n_pixels / 2**30, 2), "zip_mib": round(zip_path.stat().st_size / 2**20),
        "register": register, "train_one_epoch": train, "evaluate": evaluate,
        "epoch_train_seconds": round(record["seconds"], 1), "epoch_eval_seconds": round(record["eval_seconds"], 1),
        "epoch_tflop": round(flops / 1e12, 2), "matmul_gflops": round(rate, 1),
        "epoch_floor_seconds": round(floor, 1), "epoch_over_floor": round(record["seconds"] / floor, 2),
        "test_elbo": json.loads(evaluate["last_line"])["test_elbo"],
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
