"""Training speed on Fashion-MNIST (60k) against this machine's matmul limit and the tutorial's loop.

    python -m bench.train_speed [--json] [--quick]
"""
from __future__ import annotations

import statistics

import torch

from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig, tutorial_preset
from vae_core.data import load_dataset
from vae_core.model import VAE
from vae_core.train import fit

from .common import emit, log, matmul_peak, parser, train_flops_per_image
from .tutorial import TutorialVAE, train_tutorial, tutorial_loader


def our_epoch(cfg: ModelConfig, data, train: TrainConfig = TrainConfig(), epochs: int = 3) -> float:
    """Median training time of epochs 2…`epochs` (the first one warms up the allocator), without evaluation."""
    torch.manual_seed(0)
    model = VAE(cfg)
    hist = fit(model, data, ObjectiveConfig(), TrainConfig(epochs=epochs, lr=train.lr,
                                                           batch_size=train.batch_size)).history
    return statistics.median(rec["seconds"] for rec in hist[1:])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--quick", action="store_true", help="skip the scaling table")
    args = p.parse_args()
    data = load_dataset("fashion-mnist")
    n = len(data.x_train)

    default_cfg = ModelConfig()
    model = VAE(default_cfg)
    log("measuring the matmul peak …")
    peak = matmul_peak(model, 128)
    limit = peak["square_2048"]
    flops = train_flops_per_image(model) * n
    floor = flops / (limit * 1e9)

    log("our default model and training (3 epochs) …")
    epoch_s = our_epoch(default_cfg, data)

    tut = tutorial_preset()
    log("the tutorial model and recipe (batch 128) in our loop (3 epochs) …")
    ours_tut_s = our_epoch(tut.model, data, tut.train)
    log("the tutorial model with our default batch and rate (3 epochs) …")
    ours_tut_default_s = our_epoch(tut.model, data)
    log("the tutorial model in the tutorial's DataLoader loop (2 epochs) …")
    torch.manual_seed(0)
    loader, model = tutorial_loader(), TutorialVAE()
    train_tutorial(model, loader, epochs=1)  # warm-up epoch, as for ours
    tut_loop_s, _ = train_tutorial(model, loader, epochs=1)
    tut_cfg = tut.model
    tut_floor = train_flops_per_image(VAE(tut_cfg)) * n / (limit * 1e9)

    result = {
        "n_train": n, "batch_size": TrainConfig().batch_size, "gemm_gflops": limit, "gemm_layer_gflops": peak["layers"],
        "flops_per_epoch": flops, "floor_s": round(floor, 3), "epoch_s": round(epoch_s, 3),
        "achieved_gflops": round(flops / epoch_s / 1e9, 1), "ratio_to_floor": round(epoch_s / floor, 2),
        "tutorial_model_ours_batch128_epoch_s": round(ours_tut_s, 3),
        "tutorial_model_ours_batch128_ratio_to_floor": round(ours_tut_s / tut_floor, 2),
        "tutorial_model_ours_epoch_s": round(ours_tut_default_s, 3),
        "tutorial_model_ours_ratio_to_floor": round(ours_tut_default_s / tut_floor, 2),
        "tutorial_loop_epoch_s": round(tut_loop_s, 3),
        "tutorial_loop_ratio_to_floor": round(tut_loop_s / tut_floor, 2),
        "speedup_vs_tutorial_loop": round(tut_loop_s / ours_tut_default_s, 2),
        "speedup_vs_tutorial_loop_batch128": round(tut_loop_s / ours_tut_s, 2),
    }
    if not args.quick:
        scaling = {}
        for size in (10_000, 30_000, 60_000):
            log(f"scaling: {size} images …")
            scaling[str(size)] = round(our_epoch(default_cfg, data.subset(size, 1000), epochs=2), 3)
        result["scaling_epoch_s"] = scaling
    emit(result, args.json)


if __name__ == "__main__":
    main()
