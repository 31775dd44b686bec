"""A model-agnostic training loop with callbacks (in the spirit of minGPT's trainer).

The dataset stays one tensor on the device; each epoch slices a seeded random permutation into index
batches, so there is no per-item DataLoader work. Every random draw (the permutation and the posterior
samples) comes from one private generator seeded with `TrainConfig.seed`, so a run gives the same history
whatever else runs in the same process. Progress bars, Stop buttons and the run service hook into the same
callbacks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import ObjectiveConfig, TrainConfig
from .data import Dataset
from .metrics import evaluate_elbo, mutual_information
from .model import VAE
from .objectives import Loss, TrainingObjective, elbo_terms
from .resume import TrainState


@dataclass
class StepProgress:
    """Where training is, passed to `on_step` after every optimiser step."""

    epoch: int  # 0-based epoch in progress
    epochs: int
    step: int  # 0-based step within the epoch
    steps: int  # steps per epoch
    loss: Loss
    elapsed: float  # seconds since `fit` started

    @property
    def fraction(self) -> float:
        """Share of all optimiser steps done, 0…1."""
        return (self.epoch + (self.step + 1) / self.steps) / self.epochs


StepCallback = Callable[[StepProgress], None]
EpochCallback = Callable[[dict, VAE], None]  # (history record, model)
StateCallback = Callable[[TrainState], None]  # the state to resume from, after each epoch (serialise it at once:
# the optimisers' moments in it are the live tensors)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    stop_reason: str | None = None  # None: ran all epochs
    diverged: bool = False


def make_optimizer(model: VAE, lr: float, params=None) -> torch.optim.Optimizer:
    """Adam over `params` (default: all of the model's)."""
    params = list(model.parameters() if params is None else params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused Adam is missing on some devices/builds
        return torch.optim.Adam(params, lr=lr)


class AggressiveEncoder:
    """Aggressive inference-network training (He et al. 2019, "Lagging inference networks and posterior
    collapse", Algorithm 1). Before each decoder step the encoder alone is trained on fresh mini-batches until its
    loss stops improving (the mean over a block of `CHECK` steps is no lower than the block's before, or `MAX`
    steps), so that q(z|x) keeps up with the decoder's current posterior instead of lagging behind it. After each
    epoch I(x;z) is measured on a fixed probe of training images; once it stops rising, training goes on as usual.
    Adam is per-parameter, so separate encoder and decoder optimisers take the same steps one optimiser would."""

    CHECK, MAX = 10, 100  # He et al. check every 15 steps and stop at 100
    PROBE = 1000  # training images for I(x;z)

    def __init__(self, model: VAE, lr: float, x_train: torch.Tensor, y_train: torch.Tensor | None):
        encoder = set(model.encoder.parameters())
        self.encoder_opt = make_optimizer(model, lr, [p for p in model.parameters() if p in encoder])
        self.decoder_opt = make_optimizer(model, lr, [p for p in model.parameters() if p not in encoder])
        self.probe = x_train[:self.PROBE]  # (P, C, H, W)
        self.probe_y = None if y_train is None else y_train[:self.PROBE]  # (P,)
        self.active, self.best_mi, self.inner_steps = True, -math.inf, 0

    def train_encoder(self, loss_of: Callable[[torch.Tensor], Loss], n: int, batch: int,
                      gen: torch.Generator) -> None:
        """Encoder steps on random mini-batches (indices into the training set) until the loss stops improving."""
        previous = math.inf
        for start in range(0, self.MAX, self.CHECK):
            block = torch.zeros((), device=self.probe.device)
            for _ in range(self.CHECK):
                idx = torch.randint(n, (batch,), generator=gen, device=self.probe.device)  # (B,)
                loss = loss_of(idx)
                self.encoder_opt.zero_grad(set_to_none=True)
                self.decoder_opt.zero_grad(set_to_none=True)
                loss.total.backward()
                self.encoder_opt.step()
                block += loss.total.detach()
            self.inner_steps += self.CHECK
            mean = float(block) / self.CHECK  # one host sync per block
            if not mean < previous:
                return
            previous = mean

    def state(self) -> dict:
        return {"active": self.active, "best_mi": None if self.best_mi == -math.inf else self.best_mi,
                "inner_steps": self.inner_steps}

    def restore(self, state: dict) -> None:
        self.active, self.inner_steps = bool(state["active"]), int(state["inner_steps"])
        self.best_mi = -math.inf if state["best_mi"] is None else float(state["best_mi"])

    def end_epoch(self, model: VAE) -> float:
        """I(x;z) on the probe; ends the aggressive phase when it did not rise."""
        mi = mutual_information(model, self.probe, self.probe_y)
        if not mi > self.best_mi:
            self.active = False
        self.best_mi = max(self.best_mi, mi)
        return mi


def _snapshot(model: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _finite_weights(model: VAE) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class TrainingStep:
    """One optimiser step of `fit`: the objective's loss on a batch of training images (its KL weight and
    free-bits schedule at `progress`, in epochs), after the aggressive encoder's inner loop when that is on, and
    the update. `estimates.run_seconds` times this very step, so an estimate follows whatever training does."""

    def __init__(self, model: VAE, data: Dataset, objective: ObjectiveConfig, train: TrainConfig):
        self.model, self.x = model, data.x_train
        self.y = data.y_train if model.config.n_classes else None
        self.gen = torch.Generator(device=data.device).manual_seed(train.seed)
        self.rule = TrainingObjective(objective, train.epochs)
        self.batch_size = train.batch_size
        self.aggressive = (AggressiveEncoder(model, train.lr, data.x_train, self.y) if objective.aggressive
                           else None)
        self.optimizers = [make_optimizer(model, train.lr)] if self.aggressive is None else \
            [self.aggressive.encoder_opt, self.aggressive.decoder_opt]

    def loss_of(self, idx: torch.Tensor, progress: float, adapt: bool = True) -> Loss:
        yb = None if self.y is None else self.y[idx]
        return self.rule.loss(elbo_terms(self.model, self.x[idx], yb, self.gen), progress, adapt)

    def __call__(self, idx: torch.Tensor, progress: float, aggressive_epoch: bool = False) -> Loss:
        """Train on the images `idx` (B,); the batch's loss (not synced: reading it waits for the device)."""
        if aggressive_epoch:
            self.aggressive.train_encoder(lambda i: self.loss_of(i, progress, adapt=False), len(self.x),
                                          self.batch_size, self.gen)
        loss = self.loss_of(idx, progress)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.total.backward()
        for opt in [self.aggressive.decoder_opt] if aggressive_epoch else self.optimizers:
            opt.step()
        return loss


def fit(model: VAE, data: Dataset, objective: ObjectiveConfig, train: TrainConfig, *,
        on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
        should_stop: Callable[[], bool] | None = None, eval_batch_size: int = 1000,
        start: TrainState | None = None, on_state: StateCallback | None = None) -> FitResult:
    """Train `model` on `data.x_train` and evaluate on `data.x_test` after every epoch.

    Each history record holds, in nats per image: train −ELBO/recon/KL (true ELBO parts, averaged over the
    epoch's batches, whatever weight the objective put on the KL), test −ELBO/recon/KL, test KL per latent
    dimension, test active units and each dimension's Cov_x(E_q[z_u|x]) (`mean_var_per_dim`), the optimiser steps
    taken so far (`steps`), the KL weight of the epoch's last step (and the capacity C, for that objective), and
    the wall time of the epoch's training (`seconds`) and of its test evaluation (`eval_seconds`). With aggressive
    encoder training: whether the epoch was aggressive, its encoder-only steps and the probe's I(x;z).

    The weights left in `model` are always those the last history record describes: a non-finite loss, or
    `should_stop()` (polled after every step) becoming true, restores the weights from the end of the last
    complete epoch (the initial weights if none completed) and ends training.

    `start` continues a run from the state `on_state` was given after one of its epochs (`resume.py`): with the
    same data and configs the history goes on exactly as if the run had never stopped.
    """
    device = data.device
    model.to(device)
    step_on = TrainingStep(model, data, objective, train)
    gen, rule, aggressive, optimizers = step_on.gen, step_on.rule, step_on.aggressive, step_on.optimizers
    y_test = data.y_test if model.config.n_classes else None
    n = len(data.x_train)
    steps = math.ceil(n / train.batch_size)
    check_every = 1 if device.type == "cpu" else 32  # a finiteness check syncs an accelerator
    result = FitResult()
    if start is not None:
        model.load_state_dict(start.model)
        for opt, saved in zip(optimizers, start.optimizers, strict=True):
            opt.load_state_dict(saved)
        gen.set_state(start.generator.to("cpu"))
        rule.soft = start.soft
        if aggressive is not None:
            aggressive.restore(start.aggressive)
        result.history = list(start.history)
    t0 = time.perf_counter()

    for epoch in range(len(result.history), train.epochs):
        started = time.perf_counter()
        safe = _snapshot(model)  # the weights the last history record describes
        model.train()
        order = torch.randperm(n, generator=gen, device=device)  # (N,)
        sums = torch.zeros(2, device=device)  # Σ recon, Σ KL over images
        bad = torch.zeros((), dtype=torch.bool, device=device)
        aggressive_epoch = aggressive is not None and aggressive.active
        inner_before = aggressive.inner_steps if aggressive else 0
        for step in range(steps):
            idx = order[step * train.batch_size:(step + 1) * train.batch_size]  # (B,)
            loss = step_on(idx, epoch + step / steps, aggressive_epoch)
            bad |= ~torch.isfinite(loss.total)
            sums += torch.stack([loss.recon.detach(), loss.kl.detach()]) * len(idx)
            if (step + 1) % check_every == 0 or step == steps - 1:
                if bool(bad):
                    return _diverged(model, safe, result, epoch, train.lr)
            if on_step:
                on_step(StepProgress(epoch, train.epochs, step, steps, loss, time.perf_counter() - t0))
            if should_stop and should_stop():
                model.load_state_dict(safe)
                result.stop_reason = (f"stopped by the user during epoch {epoch + 1}; the weights after epoch "
                                      f"{epoch} (the last complete one) were kept" if epoch else
                                      "stopped by the user during epoch 1, before any epoch was complete")
                return result
        if not _finite_weights(model):
            return _diverged(model, safe, result, epoch, train.lr)
        train_recon, train_kl = (sums / n).tolist()
        train_seconds = time.perf_counter() - started
        test = evaluate_elbo(model, data.x_test, y_test, batch_size=eval_batch_size)
        record = {
            "epoch": epoch + 1,
            "train_elbo": train_recon + train_kl, "train_recon": train_recon, "train_kl": train_kl,
            "test_elbo": test["elbo"], "test_recon": test["recon"], "test_kl": test["kl"],
            "kl_per_dim": test["kl_per_dim"], "active_units": test["active_units"],
            "mean_var_per_dim": test["mean_var_per_dim"], "steps": (epoch + 1) * steps,
            "kl_weight": rule.weight(epoch + (steps - 1) / steps),
            "seconds": train_seconds, "eval_seconds": time.perf_counter() - started - train_seconds,
        }
        if objective.capacity > 0:
            record["capacity"] = rule.capacity(epoch + (steps - 1) / steps)
        if aggressive is not None:
            record.update(aggressive=aggressive_epoch, encoder_steps=aggressive.inner_steps - inner_before,
                          probe_mutual_info=aggressive.end_epoch(model) if aggressive_epoch else None)
        result.history.append(record)
        if on_epoch:
            on_epoch(record, model)
        if on_state:
            on_state(TrainState(epoch=epoch + 1, model=_snapshot(model),
                                optimizers=[opt.state_dict() for opt in optimizers], generator=gen.get_state(),
                                soft=rule.soft, aggressive=aggressive.state() if aggressive else None,
                                history=list(result.history)))
    return result


def _diverged(model: VAE, safe: dict, result: FitResult, epoch: int, lr: float) -> FitResult:
    model.load_state_dict(safe)
    result.diverged = True
    result.stop_reason = (f"training diverged in epoch {epoch + 1} (the loss became NaN or infinite); the weights "
                          f"from the start of that epoch were kept. Try a smaller learning rate than {lr:g}.")
    return result
