"""How long work will take, measured on this machine from a short probe, never assumed: a few optimiser steps
of the very model a run will train, a slice of its test evaluation, a few images of an IWAE evaluation. The
result is what a page shows before the user starts the work ("≈ 40 s"), next to the live estimate that the
running job then gives from its own measured epoch times.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .data import Dataset
from .metrics import evaluate_elbo, iwae_nll, mutual_information
from .model import VAE
from .objectives import TrainingObjective, elbo_terms
from .runs import RunSpec, build_model
from .train import AggressiveEncoder, make_optimizer

PROBE_STEPS = 3
PROBE_EVAL_IMAGES = 500
PROBE_IWAE_IMAGES = 8


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the whole run
    epoch_seconds: float  # one epoch: training and the test evaluation after it
    steps_per_epoch: int
    end_seconds: float  # the end-of-run evaluation
    encoder_steps: int = 0  # aggressive training: encoder-only steps per decoder step, measured at the start

    @property
    def probe_note(self) -> str:
        note = f"measured from {PROBE_STEPS} probe steps on this machine"
        if self.encoder_steps:
            note += (f"; aggressive training took {self.encoder_steps} encoder steps per decoder step at the start, "
                     "and this assumes it stays aggressive all run: it usually stops sooner")
        return note


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def run_seconds(spec: RunSpec, data: Dataset) -> Estimate:
    """Seconds `spec` will take on `data` (already resolved: subset and held-out class applied), from
    `PROBE_STEPS` timed optimiser steps after one warm-up step, a timed test evaluation of up to
    `PROBE_EVAL_IMAGES` images, and, for an end-of-run evaluation, a timed slice of it."""
    device = data.device
    model = build_model(spec.model, spec.train.seed).to(device)
    opt = make_optimizer(model, spec.train.lr)
    gen = torch.Generator(device=device).manual_seed(0)
    n = len(data.x_train)
    batch = min(spec.train.batch_size, n)
    y_all = data.y_train if spec.model.n_classes else None
    objective = TrainingObjective(spec.objective, spec.train.epochs)

    def step() -> None:
        idx = torch.randint(n, (batch,), generator=gen, device=device)  # (B,)
        y = None if y_all is None else y_all[idx]
        loss = objective.loss(elbo_terms(model, data.x_train[idx], y, gen), 0.0)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()

    step()  # warm-up: first-call allocations
    step_s = _timed(lambda: [step() for _ in range(PROBE_STEPS)], device) / PROBE_STEPS
    steps = math.ceil(n / spec.train.batch_size)
    encoder_steps = 0
    if spec.objective.aggressive:  # one inner loop from the initial weights: its length, at the cost of a step each
        inner = AggressiveEncoder(model, spec.train.lr, data.x_train, y_all)
        inner.train_encoder(lambda idx: objective.loss(elbo_terms(model, data.x_train[idx],
                                                                  None if y_all is None else y_all[idx], gen),
                                                       0.0, adapt=False), n, batch, gen)
        encoder_steps = inner.inner_steps
    m = min(len(data.x_test), PROBE_EVAL_IMAGES)
    y_test = data.y_test if spec.model.n_classes else None
    probe_x, probe_y = data.x_test[:m], None if y_test is None else y_test[:m]
    eval_s = _timed(lambda: evaluate_elbo(model, probe_x, probe_y), device) * len(data.x_test) / m
    end_s = 0.0
    if spec.lab_metrics or spec.data.exclude_class is not None:
        end_s = eval_s  # per-image scores cost about one evaluation pass
        if spec.lab_metrics:
            end_s += _timed(lambda: mutual_information(model, probe_x, probe_y), device) * (len(data.x_test) / m) ** 2
        if spec.iwae_k:
            end_s += iwae_seconds(model, data.x_test, y_test, spec.iwae_k)
    epoch_s = steps * step_s * (1 + encoder_steps) + eval_s
    return Estimate(seconds=spec.train.epochs * epoch_s + end_s, epoch_seconds=epoch_s, steps_per_epoch=steps,
                    end_seconds=end_s, encoder_steps=encoder_steps)


def iwae_seconds(model: VAE, x: torch.Tensor, y: torch.Tensor | None, k: int) -> float:
    """Seconds `metrics.iwae_nll(model, x, y, k=k)` will take, from timing it on `PROBE_IWAE_IMAGES` images
    (its cost is linear in the number of images at a fixed k)."""
    m = min(len(x), PROBE_IWAE_IMAGES)
    probe = lambda: iwae_nll(model, x[:m], None if y is None else y[:m], k=k, batch_size=m)  # noqa: E731
    probe()  # warm-up
    return _timed(probe, x.device) * len(x) / m
