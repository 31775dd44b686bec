"""How long work will take, measured on this machine from a short probe, never assumed: a few optimiser steps
of the very model a run will train, a slice of its test evaluation, a few images of an IWAE evaluation. The
result is what a page shows before the user starts the work ("≈ 40 s"), next to the live estimate that the
running job then gives from its own measured epoch times. The maps' t-SNE and UMAP have no cheap probe: their
estimate starts from rates measured on a 2-core machine and then uses this process's own last measurement.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import replay
from . import resume as train_state
from .complexity import compressed_nats
from .data import Dataset
from .decoding import decode_lattice, lattice_axis
from .metrics import IWAE_ROWS, collapse_metrics, evaluate_elbo, iwae_nll, per_sample_scores
from .model import VAE
from .pixels import as_float
from .resume import TrainState
from .runs import PREVIEW_SIDE, RunSpec, build_model
from .train import TrainingStep

PROBE_STEPS = 3  # timed in blocks of this many optimiser steps…
PROBE_SECONDS = 0.25  # …until they took this long (or PROBE_MAX_STEPS): a few steps alone vary by ±30 %
PROBE_MAX_STEPS = 60
PROBE_EVAL_IMAGES = 500
PROBE_IWAE_IMAGES = 8


@dataclass(frozen=True)
class Estimate:
    """A run's time on this machine, in parts: `fit_seconds` for its epochs (training steps, the test evaluation,
    the replay frame, the decoder preview and the saved training state of each) and `end_seconds` for the
    end-of-run evaluation. What the process needs to start (loading the data in a worker) is not probed: the run
    service adds what it measured for runs that finished here (`calibration.Calibration`)."""

    seconds: float  # the whole run: fit_seconds + end_seconds
    epoch_seconds: float  # one epoch, all it does
    steps_per_epoch: int
    end_seconds: float  # the end-of-run evaluation
    encoder_steps: int = 0  # aggressive training: encoder-only steps per decoder step, measured at the start

    @property
    def fit_seconds(self) -> float:
        return self.seconds - self.end_seconds

    @property
    def probe_note(self) -> str:
        note = "measured on this machine from a few training steps, an evaluation and a replay frame"
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


def _steady_seconds(fn, device) -> float:
    """Seconds `fn()` takes once warm: the median of three timings after one untimed call (a single timing, scaled
    up to a whole test set, carried any hiccup of the machine twentyfold)."""
    fn()
    return statistics.median(_timed(fn, device) for _ in range(3))


def _step_seconds(step: TrainingStep, n: int, batch: int, device) -> float:
    """Seconds per optimiser step of `fit` (the step it runs, on random batches), after one warm-up step: the
    median of blocks of PROBE_STEPS steps, at least three blocks and PROBE_SECONDS in all (the first steps after
    the warm-up can still be several times slower: the median leaves them out)."""
    gen = torch.Generator(device=device).manual_seed(0)
    block = lambda: [step(torch.randint(n, (batch,), generator=gen, device=device), 0.0)  # noqa: E731
                     for _ in range(PROBE_STEPS)]
    step(torch.randint(n, (batch,), generator=gen, device=device), 0.0)  # first-call allocations
    blocks: list[float] = []
    while len(blocks) < 3 or (sum(blocks) < PROBE_SECONDS and len(blocks) * PROBE_STEPS < PROBE_MAX_STEPS):
        blocks.append(_timed(block, device))
    return statistics.median(blocks) / PROBE_STEPS


def _quadratic_seconds(fn: Callable[[int], object], n: int, m: int, device) -> float:
    """Seconds `fn(n)` takes, for work with parts linear and quadratic in its number of images (the aggregate
    posterior's pairwise terms), from timing `fn(m // 2)` and `fn(m)` after a warm-up: t(k) = b·k + c·k²."""
    if n <= m:
        fn(min(8, n))
        return _timed(lambda: fn(n), device)
    fn(8)
    half, full = _timed(lambda: fn(m // 2), device), _timed(lambda: fn(m), device)
    c = max(0.0, (full - 2 * half) / (2 * (m // 2) ** 2 + 1e-12)) if m >= 4 else 0.0
    b = max(0.0, (full - c * m * m) / m)
    return b * n + c * n * n


def run_seconds(spec: RunSpec, data: Dataset) -> Estimate:
    """Seconds `spec` will take on `data` (already resolved: subset and held-out class applied), from what a run
    does, timed here: `fit`'s own optimiser step (`train.TrainingStep`; for aggressive training, one inner
    encoder loop from the initial weights too), a test evaluation of up to `PROBE_EVAL_IMAGES` images, one
    replay frame, the decoder preview and the training state saved after each epoch, and the end-of-run
    evaluation (the held-out scores, or the lab's metrics) timed on a slice of the test set and scaled."""
    device = data.device
    model = build_model(spec.model, spec.train.seed).to(device)
    step = TrainingStep(model, data, spec.objective, spec.train)
    n = len(data.x_train)
    batch = min(spec.train.batch_size, n)
    step_s = _step_seconds(step, n, batch, device)
    steps = math.ceil(n / spec.train.batch_size)
    encoder_steps = 0
    if step.aggressive is not None:  # one inner loop from the initial weights: its length, at the cost of a step each
        before = step.aggressive.inner_steps
        step.aggressive.train_encoder(lambda idx: step.loss_of(idx, 0.0, adapt=False), n, batch, step.gen)
        encoder_steps = step.aggressive.inner_steps - before
    m = min(len(data.x_test), PROBE_EVAL_IMAGES)
    y_test = data.y_test if spec.model.n_classes else None
    probe_x, probe_y = data.x_test[:m], None if y_test is None else y_test[:m]
    eval_s = _steady_seconds(lambda: evaluate_elbo(model, probe_x, probe_y), device) * len(data.x_test) / m
    epoch_s = steps * step_s * (1 + encoder_steps) + eval_s + _epoch_end_seconds(spec, model, step, data)
    frames = len(replay.frame_indices(spec.train.epochs))
    recorder = replay.Recorder(data.x_test, data.y_test, y_condition=bool(spec.model.n_classes),
                               epochs=spec.train.epochs)
    frame_s = _timed(lambda: recorder.record(1, model), device)
    train_s = spec.train.epochs * epoch_s
    replay_s = min(frames * frame_s, 2 * frame_s + replay.BUDGET * train_s)  # its budget, beyond the first and last
    end_s = _timed(recorder.finish, device)
    if spec.data.exclude_class is not None:  # anomaly.held_out_evaluation: a model pass per test image, then ROCs
        end_s += _steady_seconds(lambda: per_sample_scores(model, probe_x, probe_y), device) * len(data.x_test) / m
    elif spec.lab_metrics:  # metrics.collapse_metrics
        x, y = data.x_test, y_test
        end_s += _quadratic_seconds(lambda k: collapse_metrics(model, x[:k], None if y is None else y[:k]),
                                    len(x), PROBE_EVAL_IMAGES, device)
        if spec.iwae_k:
            end_s += iwae_seconds(model, x, y, spec.iwae_k)
    return Estimate(seconds=train_s + replay_s + end_s, epoch_seconds=epoch_s + replay_s / spec.train.epochs,
                    steps_per_epoch=steps, end_seconds=end_s, encoder_steps=encoder_steps)


def _epoch_end_seconds(spec: RunSpec, model: VAE, step: TrainingStep, data: Dataset) -> float:
    """What a run does after each epoch besides its test evaluation and replay frame (`runs.execute`): decode the
    page's preview lattice and save the training state to resume from (`resume.py`), timed once."""
    preview = 0.0
    if not spec.model.autoregressive:
        axis = lattice_axis(PREVIEW_SIDE, "quantile")
        label = 0 if spec.model.n_classes else None
        preview = _timed(lambda: decode_lattice(model, axis, axis, label=label), data.device)
    state = TrainState(epoch=1, model=model.state_dict(), optimizers=[o.state_dict() for o in step.optimizers],
                       generator=step.gen.get_state(), soft=step.rule.soft,
                       aggressive=step.aggressive.state() if step.aggressive else None, history=[])
    with tempfile.TemporaryDirectory() as folder:
        saving = _timed(lambda: train_state.save(folder, state, spec.to_dict()), data.device)
    return preview + saving


def encode_seconds(model: VAE, data: Dataset, probe: int = 256) -> float:
    """Seconds `latent_map.encode` will take for every image of `data`: its per-image pass (`per_sample_scores`)
    timed on up to `probe` test images after a warm-up, times the number of images."""
    m = min(len(data.x_test), probe)
    y = data.y_test[:m] if model.config.n_classes else None
    per_sample_scores(model, data.x_test[:min(m, 8)], None if y is None else y[:8])  # warm-up
    seconds = _timed(lambda: per_sample_scores(model, data.x_test[:m], y), data.device)
    return seconds / max(1, m) * (len(data.x_train) + len(data.x_test))


def score_new_data_seconds(model: VAE, x_new, y_new, n_test: int, probe: int = 200) -> float:
    """Seconds `anomaly.score_new_data` will take for the images `x_new` (array or tensor, 8-bit or float) against
    `n_test` test images whose model pass is done already: the model pass and the compression (L(x)) timed on up to
    `probe` of the new images after a warm-up, then scaled to the whole job."""
    n = len(x_new)
    m = max(1, min(probe, n))
    device = next(model.parameters()).device
    x = as_float(torch.as_tensor(np.asarray(x_new[:m]) if not isinstance(x_new, torch.Tensor) else x_new[:m])
                 ).to(device)
    y = None
    if model.config.n_classes and y_new is not None:
        y = torch.as_tensor(np.asarray(y_new[:m]) if not isinstance(y_new, torch.Tensor) else y_new[:m]).long()
        y = y.to(device)
    per_sample_scores(model, x[:min(m, 8)], None if y is None else y[:min(m, 8)])  # warm-up
    model_s = _timed(lambda: per_sample_scores(model, x, y), device) / m
    pixels = x.cpu().numpy()
    png_s = _timed(lambda: compressed_nats(pixels), device) / m
    return model_s * n + png_s * (n + n_test)


def iwae_seconds(model: VAE, x: torch.Tensor, y: torch.Tensor | None, k: int) -> float:
    """Seconds `metrics.iwae_nll(model, x, y, k=k)` will take (batches of 100 images, each in chunks of samples:
    `IWAE_ROWS` rows a pass), from timing passes of that size on a few images (at least `PROBE_IWAE_IMAGES`, at most
    one batch): its cost is linear in the number of images at a fixed k, but a pass of fewer rows runs faster."""
    m = min(len(x), max(PROBE_IWAE_IMAGES, min(100, math.ceil(IWAE_ROWS / k))))
    part = lambda: iwae_nll(model, x[:m], None if y is None else y[:m], k=k, batch_size=m)  # noqa: E731
    return _steady_seconds(part, x.device) * len(x) / m


# ---------------------------------------------------------------- t-SNE and UMAP maps

# UMAP's time in units (`_umap_units`): its optimisation, per point and epoch, and its nearest-neighbour search,
# n log n. Fitted on a 2-core machine at 15 neighbours: 1,797 digits 1.6 s, 10,000 Fashion-MNIST 9.5 s (500 epochs),
# 100,000 CelebA-shaped codes 70 s (200 epochs), besides the compilation.
UMAP_REF_SECONDS = 0.39e-3  # per unit: a point's 500 epochs at n_neighbors → 0
UMAP_NEIGHBOUR_COST = 1 / 32  # each neighbour adds this share of a point's epochs (31 s against 18 s at 50 and 15)
UMAP_SEARCH_UNITS = 0.105  # the neighbour search, units per n ln n
UMAP_COMPILE_SECONDS = 7.5  # numba compiles umap-learn's code on its first use in a process (7.4 s there)
TSNE_FIXED_SECONDS = 3.5  # openTSNE's FFT grids and start-up, whatever the size (2-core machine)
TSNE_REF_SECONDS = 0.36e-3  # per point, 550 iterations: 2k 4.4 s, 10k 7.1 s, 30k 13.5 s, 100k 39.4 s there
_MAP_TIMINGS = {"compiled": False, "UMAP": None, "t-SNE": None}  # this process's last measured rates
_MAP_LOCK = threading.Lock()


def map_timings() -> dict:
    """This process's map history: whether UMAP's code is compiled yet, and the last measured rate of each."""
    with _MAP_LOCK:
        return dict(_MAP_TIMINGS)


def _umap_units(n: int, n_neighbors: int) -> float:
    """The work of a UMAP of n points: the optimisation's epochs and the neighbour search (McInnes et al. 2018)."""
    epochs = 500 if n <= 10_000 else 200  # umap-learn's default
    return n * (1 + n_neighbors * UMAP_NEIGHBOUR_COST) * epochs / 500 + UMAP_SEARCH_UNITS * n * math.log(max(n, 2))


def umap_seconds(n: int, n_neighbors: int) -> tuple[float, bool, bool]:
    """(expected seconds of a UMAP of n points, whether that rate was measured here (else the reference machine's),
    whether it includes the first run's compilation, UMAP_COMPILE_SECONDS)."""
    t = map_timings()
    rate = t["UMAP"] if t["UMAP"] is not None else UMAP_REF_SECONDS
    first = not t["compiled"]
    return rate * _umap_units(n, n_neighbors) + (UMAP_COMPILE_SECONDS if first else 0.0), t["UMAP"] is not None, first


def tsne_seconds(n: int) -> float:
    """Expected seconds of `projection.tsne` on n points: a fixed part and a part linear in n (openTSNE's FFT-
    accelerated gradients, Linderman et al. 2019), at this process's last measured rate when there is one."""
    rate = map_timings()["t-SNE"]
    return TSNE_FIXED_SECONDS + n * (TSNE_REF_SECONDS if rate is None else rate)


def record_map_rate(kind: str, n: int, n_neighbors: int, seconds: float) -> None:
    """Remember what a t-SNE or UMAP of n points took, for the next estimate. A first UMAP's time is mostly numba's
    compilation, so it only marks the code as compiled."""
    with _MAP_LOCK:
        if kind == "UMAP":
            if _MAP_TIMINGS["compiled"]:
                _MAP_TIMINGS["UMAP"] = seconds / _umap_units(n, n_neighbors)
            _MAP_TIMINGS["compiled"] = True
        elif kind == "t-SNE" and n >= 1000:
            _MAP_TIMINGS["t-SNE"] = max(0.0, seconds - TSNE_FIXED_SECONDS) / n
