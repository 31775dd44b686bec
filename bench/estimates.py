"""Estimates against what the work really took, as the app makes them, on two datasets (the digits and
Fashion-MNIST): a Train-page run (the probe alone on a fresh server, then scaled by that first run: the figure
a second visitor sees), a collapse-lab sweep (wall time from submitting to its last run's end, on the server's
workers), the held-out-class experiment of the Anomalies page, the IWAE NLL with k = 1000 of the shipped model
and two UMAPs of its encodings (the first in the process includes numba's compilation; then the reference rate,
until a UMAP has measured this machine's). Each row: the estimate, the actual seconds and the error
|estimate − actual| / actual.

    python -m bench.estimates [--json] [--datasets digits fashion-mnist] [--epochs N]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from vae_core import estimates, latent_map, locations, store
from vae_core.checkpoint import load as load_checkpoint
from vae_core.config import ModelConfig, TrainConfig
from vae_core.device import default_device
from vae_core.executors import LocalExecutor
from vae_core.metrics import iwae_nll
from vae_core.runs import RunService, RunSpec
from vae_core.sweep import SweepSpec, probe_estimates, submit_sweep

from .common import emit, log, parser

SHIPPED = {"digits": "digits-2d", "fashion-mnist": "fashion-mnist-2d"}
QUICK_EPOCHS = {"digits": 20, "fashion-mnist": 2}  # the Anomalies page's quick model: 20 epochs under 5,000 images


def row(what: str, dataset: str, estimate: float, actual: float) -> dict:
    error = abs(estimate - actual) / actual
    log(f"{what:38s} {dataset:14s} estimate {estimate:7.2f} s  actual {actual:7.2f} s  error {100 * error:4.0f} %")
    return {"what": what, "dataset": dataset, "estimate_s": round(estimate, 2), "actual_s": round(actual, 2),
            "error": round(error, 3)}


def train_runs(service: RunService, name: str, shape, data, epochs: int) -> list[dict]:
    spec = RunSpec(data=store.DataRef(name), model=ModelConfig(image_shape=shape, latent_dim=2),
                   train=TrainConfig(epochs=epochs))
    out = []
    for label in ("Train run, probe only (fresh server)", "Train run, scaled by the first"):
        est = estimates.run_seconds(spec, data)
        expected = service.expected_seconds(est)
        run = service.submit(spec, expected_seconds=est)
        run.wait()
        out.append(row(label, name, expected, run.elapsed))
    return out


def sweep_row(service: RunService, name: str, shape, data, epochs: int, folder: Path) -> dict:
    spec = SweepSpec(dataset=name, latent_dim=16, epochs=epochs, betas=(1.0, 4.0), free_bits=(0.0, 0.5),
                     n_train=min(len(data.x_train), 10_000), n_test=min(len(data.x_test), 2000), iwae_k=50)
    swept = store.load(spec.data_ref(), default_device())
    probes = probe_estimates(spec, shape, swept)
    seconds = [service.expected_seconds(e) for e in probes.values()]
    expected = service.expected_finish(seconds)
    t0 = time.perf_counter()
    for run in submit_sweep(service, spec, folder, shape, estimates=probes):
        run.wait()
    return row(f"sweep of {len(seconds)} runs ({epochs} epochs, d = 16)", name, expected, time.perf_counter() - t0)


def held_out_row(service: RunService, name: str, shape) -> dict:
    spec = RunSpec(data=store.DataRef(name, exclude_class=0),
                   model=ModelConfig(image_shape=shape, latent_dim=2, hidden=(256, 128)),
                   train=TrainConfig(epochs=QUICK_EPOCHS[name], batch_size=128))
    est = estimates.run_seconds(spec, store.load(spec.data, default_device()))
    expected = service.expected_seconds(est)
    run = service.submit(spec, expected_seconds=est)
    run.wait()
    return row("held-out class experiment", name, expected, run.elapsed)


def iwae_and_umap_rows(name: str, data) -> list[dict]:
    model = load_checkpoint(locations.CHECKPOINT_DIR / f"{SHIPPED[name]}.safetensors", default_device()).model
    x, y = data.x_test, (data.y_test if model.config.n_classes else None)
    expected = estimates.iwae_seconds(model, x, y, 1000)
    t0 = time.perf_counter()
    iwae_nll(model, x, y, k=1000, batch_size=100)
    rows = [row(f"IWAE NLL, k = 1000, {len(x):,} images", name, expected, time.perf_counter() - t0)]
    enc = latent_map.encode(model, data)
    view = latent_map.View("UMAP", points=10_000)
    for _ in range(2):
        label = "UMAP, measured rate" if estimates.map_timings()["UMAP"] else (
            "UMAP, reference rate" if estimates.map_timings()["compiled"] else "UMAP, with numba's compilation")
        expected = view.seconds(enc.n)
        t0 = time.perf_counter()
        latent_map.project(enc, view)
        rows.append(row(f"{label} ({min(enc.n, 10_000):,} points)", name, expected, time.perf_counter() - t0))
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    p.add_argument("--epochs", type=int, default=0, help="a Train run's epochs (default: 40 digits, 3 fashion)")
    args = p.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = store.load(store.DataRef(name), default_device())
            shape = tuple(data.image_shape)
            service = RunService(store.Workspace(Path(tmp) / name), LocalExecutor(name="bench-run"))
            epochs = args.epochs or (40 if name == "digits" else 3)
            rows += train_runs(service, name, shape, data, epochs)
            rows.append(sweep_row(service, name, shape, data, 10 if name == "digits" else 3,
                                  Path(tmp) / name / "sweep"))
            rows.append(held_out_row(service, name, shape))
            rows += iwae_and_umap_rows(name, data)
            service.executor.shutdown()
    errors = sorted(r["error"] for r in rows)
    emit({"rows": rows, "error_median": errors[len(errors) // 2], "error_max": errors[-1]}, args.json)


if __name__ == "__main__":
    main()
