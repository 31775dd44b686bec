"""Training speed on Fashion-MNIST (60k) against this machine's matmul limit and the tutorial's loop.

    python -m bench.train_speed [--json] [--quick] [--rounds N]

The machine is shared and its matmul rate moves by ±15 % within minutes, so the measurements are interleaved:
each round times the 2048² matmul peak, then one epoch of each loop (ours also as a run of the run service, in
a worker thread, as the app trains: `run_service_vs_inline`). A ratio is taken within its round, and
the printed figure is the median over rounds. `ratio_to_best_floor` is the stricter figure: the median epoch
against the floor of the highest peak seen in any round.
"""
from __future__ import annotations

import tempfile
from statistics import median
from typing import Callable

import torch

from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig, tutorial_preset
from vae_core.data import Dataset, load_dataset
from vae_core.executors import LocalExecutor
from vae_core.model import VAE
from vae_core.runs import RunService, RunSpec
from vae_core.store import DataRef, Workspace
from vae_core.train import fit

from .common import emit, gemm_gflops, log, matmul_peak, parser, train_flops_per_image
from .tutorial import TutorialVAE, train_tutorial, tutorial_loader


def our_epoch(cfg: ModelConfig, data: Dataset, train: TrainConfig = TrainConfig()) -> Callable[[], float]:
    """A function that trains one more epoch of one model with our loop and returns its training seconds
    (without the test evaluation)."""
    torch.manual_seed(0)
    model = VAE(cfg)
    one = TrainConfig(epochs=1, lr=train.lr, batch_size=train.batch_size)
    return lambda: fit(model, data, ObjectiveConfig(), one).history[0]["seconds"]


def service_epoch(service: RunService) -> Callable[[], float]:
    """One epoch of the default model as a run of the run service (a worker thread, as the app trains): returns
    its training seconds, comparable with `our_epoch`."""
    spec = RunSpec(data=DataRef("fashion-mnist"), model=ModelConfig(), train=TrainConfig(epochs=1))

    def one() -> float:
        run = service.submit(spec)
        run.wait()
        return run.history[0]["seconds"]
    return one


def tutorial_epoch() -> Callable[[], float]:
    """The same for the tutorial's own loop: torchvision dataset, per-item ToTensor, DataLoader, batch 128."""
    torch.manual_seed(0)
    loader, model = tutorial_loader(), TutorialVAE()
    return lambda: train_tutorial(model, loader, epochs=1)[0]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--quick", action="store_true", help="skip the scaling table")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = p.parse_args()
    data = load_dataset("fashion-mnist")
    n = len(data.x_train)
    batch = TrainConfig().batch_size
    tut = tutorial_preset()
    flops = train_flops_per_image(VAE(ModelConfig())) * n
    tut_flops = train_flops_per_image(VAE(tut.model)) * n
    workspace = tempfile.TemporaryDirectory(prefix="vae-bench-")
    service = RunService(Workspace(workspace.name), LocalExecutor(1))
    loops = {"ours": our_epoch(ModelConfig(), data), "ours_run_service": service_epoch(service),
             "tutorial_model_ours": our_epoch(tut.model, data),
             "tutorial_model_ours_batch128": our_epoch(tut.model, data, tut.train), "tutorial_loop": tutorial_epoch()}

    log("warm-up: one epoch of each loop …")
    for fn in loops.values():
        fn()
    rounds: list[dict] = []
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}: matmul peak, then one epoch of each loop …")
        row = {"gemm_gflops": gemm_gflops(2048, 2048, 2048)}
        row.update({name: fn() for name, fn in loops.items()})
        rounds.append(row)
        log("  " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))

    def per_round(fn) -> float:
        return round(median(fn(row) for row in rounds), 2)

    def floor(f: float, row: dict) -> float:
        return f / (row["gemm_gflops"] * 1e9)

    peak = median(row["gemm_gflops"] for row in rounds)
    epoch_s = median(row["ours"] for row in rounds)
    result = {
        "n_train": n, "batch_size": batch, "rounds": args.rounds,
        "gemm_gflops": round(peak, 1), "gemm_gflops_rounds": [round(row["gemm_gflops"], 1) for row in rounds],
        "gemm_layer_gflops": matmul_peak(VAE(ModelConfig()), batch)["layers"],
        "flops_per_epoch": flops, "floor_s": round(flops / (peak * 1e9), 3), "epoch_s": round(epoch_s, 3),
        "epoch_s_rounds": [round(row["ours"], 3) for row in rounds],
        "achieved_gflops": round(flops / epoch_s / 1e9, 1),
        "ratio_to_floor": per_round(lambda row: row["ours"] / floor(flops, row)),
        "ratio_to_best_floor": round(epoch_s / floor(flops, max(rounds, key=lambda row: row["gemm_gflops"])), 2),
        "tutorial_model_ours_epoch_s": round(median(row["tutorial_model_ours"] for row in rounds), 3),
        "tutorial_model_ours_ratio_to_floor": per_round(lambda row: row["tutorial_model_ours"] / floor(tut_flops, row)),
        "tutorial_model_ours_batch128_epoch_s": round(median(row["tutorial_model_ours_batch128"] for row in rounds), 3),
        "tutorial_model_ours_batch128_ratio_to_floor":
            per_round(lambda row: row["tutorial_model_ours_batch128"] / floor(tut_flops, row)),
        "tutorial_loop_epoch_s": round(median(row["tutorial_loop"] for row in rounds), 3),
        "tutorial_loop_ratio_to_floor": per_round(lambda row: row["tutorial_loop"] / floor(tut_flops, row)),
        "speedup_vs_tutorial_loop": per_round(lambda row: row["tutorial_loop"] / row["tutorial_model_ours"]),
        "speedup_vs_tutorial_loop_batch128":
            per_round(lambda row: row["tutorial_loop"] / row["tutorial_model_ours_batch128"]),
        "run_service_epoch_s": round(median(row["ours_run_service"] for row in rounds), 3),
        "run_service_vs_inline": per_round(lambda row: row["ours_run_service"] / row["ours"]),
    }
    service.executor.shutdown()
    workspace.cleanup()
    if not args.quick:
        scaling = {}
        for size in (10_000, 30_000, 60_000):
            log(f"scaling: {size} images …")
            epoch = our_epoch(ModelConfig(), data.subset(size, 1000))
            epoch()  # warm-up
            scaling[str(size)] = round(median(epoch() for _ in range(2)), 3)
        result["scaling_epoch_s"] = scaling
    emit(result, args.json)


if __name__ == "__main__":
    main()
