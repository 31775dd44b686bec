"""Equal CPU budget on Fashion-MNIST with a 2-D latent: our default training vs the tutorial recipe.

    python -m bench.quality [--json] [--budget 60] [--iwae-k 1000]
"""
from __future__ import annotations

import time

import torch

from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import load_dataset
from vae_core.metrics import evaluate_elbo, iwae_nll
from vae_core.model import VAE
from vae_core.train import fit

from .common import emit, log, parser
from .tutorial import TutorialVAE, to_vae_core, train_tutorial, tutorial_loader


def train_ours(data, budget: float) -> tuple[VAE, int]:
    torch.manual_seed(0)
    model = VAE(ModelConfig())
    start, evaluating = time.perf_counter(), [0.0]  # the per-epoch test evaluation is not training time

    def on_epoch(rec, _model):
        evaluating[0] += rec["eval_seconds"]

    result = fit(model, data, ObjectiveConfig(), TrainConfig(epochs=1000), on_epoch=on_epoch,
                 should_stop=lambda: time.perf_counter() - start - evaluating[0] > budget)
    return model, len(result.history)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--budget", type=float, default=60.0, help="training seconds for each side")
    p.add_argument("--iwae-k", type=int, default=1000)
    args = p.parse_args()
    data = load_dataset("fashion-mnist")

    log(f"our default model, {args.budget:g} s …")
    ours, ours_epochs = train_ours(data, args.budget)
    log(f"the tutorial recipe, {args.budget:g} s …")
    torch.manual_seed(0)
    tut_model = TutorialVAE()
    _, tut_epochs = train_tutorial(tut_model, tutorial_loader(), seconds=args.budget)
    tut = to_vae_core(tut_model)

    out = {"budget_s": args.budget, "iwae_k": args.iwae_k, "ours_epochs": ours_epochs, "tutorial_epochs": tut_epochs}
    for name, model in (("ours", ours), ("tutorial", tut)):
        out[f"{name}_test_elbo"] = round(evaluate_elbo(model, data.x_test)["elbo"], 2)
        log(f"IWAE k={args.iwae_k} for {name} …")
        out[f"{name}_iwae_nll"] = round(float(iwae_nll(model, data.x_test, k=args.iwae_k).mean()), 2)
    out["elbo_gain_nats"] = round(out["tutorial_test_elbo"] - out["ours_test_elbo"], 2)
    emit(out, args.json)


if __name__ == "__main__":
    main()
