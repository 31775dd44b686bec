"""Headless command line: `python -m vae_core train|evaluate|sweep|ppca-check …`, on the same code as the app."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import checkpoint as ckpt_io
from . import collapse, previews, store
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, tutorial_preset
from .data import BUILTIN, DataError, Dataset, load_dataset
from .device import DEVICE_CHOICES, pick_device
from .executors import ExecutorError, LocalExecutor, RayExecutor
from .jobs import format_duration, progress_text
from .metrics import evaluate_elbo, iwae_nll
from .ppca import ppca_check
from .runs import Run, RunService, RunSpec
from .sweep import SweepSpec, load_sweep, parse_values, submit_sweep


class ProgressBar:
    """A one-line text progress bar on stderr, redrawn at most 10 times a second."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width, self.last = stream, width, 0.0

    def draw(self, fraction: float, text: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        filled = int(self.width * min(1.0, fraction))
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {100 * fraction:5.1f}% {text}\033[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def register(path: Path, image_size: int | None, workspace: store.Workspace) -> store.StoredDataset:
    """Store a user's file in the workspace (`Workspace.register`) with a progress bar: elapsed time and time left."""
    if image_size is not None and not (path.is_dir() or path.suffix.lower() == ".zip"):
        raise DataError(f"--image-size applies to a folder or .zip of images, not to {path.name}")
    bar, t0, drawn = ProgressBar(), time.monotonic(), []

    def progress(fraction: float, message: str) -> None:
        elapsed = time.monotonic() - t0
        left = f" · about {format_duration(elapsed / fraction * (1 - fraction))} left" if fraction > 0.02 else ""
        bar.draw(fraction, f"storing {path.name}: {message} · elapsed {format_duration(elapsed)}{left}")
        drawn.append(True)

    try:
        stored = workspace.register(path, image_size=image_size, progress=progress)
    finally:
        if drawn:
            bar.close()
    print(f"dataset {stored.file_name}: {stored.n_images:,} images of {stored.image_shape}, stored in the "
          f"workspace as {stored.short}… ({format_duration(time.monotonic() - t0)})", file=sys.stderr)
    return stored


def stored_dataset(name: str, workspace: store.Workspace) -> store.StoredDataset:
    """A dataset in the workspace by its file name or the start of its hash (at least 6 characters)."""
    found = [d for d in workspace.list_datasets()
             if d.file_name == name or (len(name) >= 6 and d.hash.startswith(name.lower()))]
    if len(found) != 1:
        known = ", ".join(d.file_name for d in workspace.list_datasets()) or "none"
        why = "matches several stored datasets" if found else "is neither a built-in dataset nor a stored one"
        raise DataError(f"--dataset {name} {why}; built-in: {', '.join(BUILTIN)}; stored: {known} "
                        "(python -m vae_core datasets)")
    return found[0]


def data_ref(args, workspace: store.Workspace) -> store.DataRef:
    """The dataset the command names: a built-in one, one stored in the workspace (`--dataset` by file name or
    hash), or a --data-file (an array file, or a folder or .zip of images resized to --image-size), which is
    validated and stored in the workspace under its content hash, so a model trained on it opens in the app with
    its data."""
    if getattr(args, "data_file", None):
        path = Path(os.path.abspath(args.data_file))  # a folder given as "." or "pets/" still has a name
        stored = register(path, args.image_size, workspace)
        return store.DataRef(stored.file_name, stored.hash)
    if args.dataset in BUILTIN:
        return store.DataRef(args.dataset)
    stored = stored_dataset(args.dataset, workspace)
    return store.DataRef(stored.file_name, stored.hash)


def cmd_datasets(args) -> int:
    ws = store.Workspace()
    if args.add:
        register(Path(os.path.abspath(args.add)), args.image_size, ws)
        return 0
    rows = ws.list_datasets()
    if not rows:
        print(f"no datasets stored in {ws.datasets_dir}", file=sys.stderr)
    for d in rows:
        classes = f"{d.n_classes} classes" if d.n_classes else "unlabelled"
        print(f"{d.short}  {d.file_name:30s} {d.n_images:>9,} images of {'×'.join(map(str, d.image_shape)):10s} "
              f"{classes:12s} {d.size_bytes / 2**20:9,.1f} MiB  {d.created}")
    return 0


def load_data(ref: store.DataRef, args, device, workspace: store.Workspace) -> Dataset:
    if ref.builtin and ref.name not in BUILTIN:
        raise DataError(f"unknown dataset {ref.name!r}; pass --data-file")
    if ref.builtin and args.data_dir:
        return load_dataset(ref.name, device, data_dir=args.data_dir, download=args.download, timeout=args.timeout)
    return store.load(ref, device, workspace, download=args.download)


def output_path(out: str, folder_for_names: Path, suffix: str = "") -> Path:
    """`--out` is a path (it has a folder in it, or ends with `suffix`) or a bare name, which means a file or
    folder of that name in the workspace."""
    if Path(out).name != out or (suffix and out.endswith(suffix)):
        return Path(out)
    return folder_for_names / f"{ckpt_io.safe_name(out)}{suffix}"


def make_service(args, workspace: store.Workspace) -> RunService:
    """The run service on the executor the command asks for: `--executor local` (`--workers N`: N runs at once,
    in worker processes when N > 1) or `--executor ray` (`--ray-address`, else a local Ray on 127.0.0.1)."""
    os.environ["VAE_DEVICE"] = args.device  # where the runs put their tensors, in any worker
    if args.executor == "ray":
        return RunService(workspace, RayExecutor(args.ray_address))
    return RunService(workspace, LocalExecutor(args.workers))


def follow(runs: list[Run], service: RunService, what: str) -> None:
    """Draw one progress bar over `runs` until all have finished; Ctrl-C stops them (keeping what they have)."""
    bar = ProgressBar()
    try:
        while not all(r.wait(0.1) for r in runs):
            done = sum(r.done for r in runs)
            current = next((r for r in runs if r.status == "running"), None)
            fraction = (done + (current.fraction if current else 0)) / len(runs)
            text = f"{what}: {current.message}" if current else what
            if current:
                text += f" · {progress_text(current)}"
            bar.draw(fraction, text)
    except KeyboardInterrupt:
        bar.close()
        print("stopping (the weights of the last complete epoch are kept) …", file=sys.stderr)
        for r in runs:
            service.stop(r)
        for r in runs:
            r.wait()
        raise
    bar.draw(1.0, f"{what}: finished in {format_duration(max(r.elapsed for r in runs))}", force=True)
    bar.close()


def cmd_train(args) -> int:
    ws = store.Workspace()
    if args.resume:
        return cmd_resume(args, ws)
    if not args.out:
        raise ValueError("train needs --out NAME (or --resume RUN)")
    device = pick_device(args.device)
    ref = data_ref(args, ws)
    data = load_data(ref, args, device, ws)
    if args.preset == "tutorial":
        preset = tutorial_preset(data.image_shape, args.latent_dim, args.epochs)
        model_cfg = preset.model
        train_cfg = TrainConfig(epochs=args.epochs, lr=preset.train.lr, batch_size=preset.train.batch_size,
                                seed=args.seed)
    else:
        model_cfg = ModelConfig(image_shape=data.image_shape, latent_dim=args.latent_dim, architecture=args.arch,
                                hidden=_ints(args.hidden), channels=_ints(args.channels), likelihood=args.likelihood,
                                gaussian_sigma=args.sigma, n_classes=data.n_classes if args.conditional else 0)
        train_cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    objective = ObjectiveConfig(beta=args.beta, free_bits=args.free_bits, warmup_epochs=args.warmup,
                                kl_schedule=args.kl_schedule, cycles=args.cycles, ramp=args.ramp,
                                kl_target=args.kl_target, capacity=args.capacity,
                                capacity_epochs=args.capacity_epochs, gamma=args.gamma, aggressive=args.aggressive)
    out = output_path(args.out, ws.models_dir, ckpt_io.SUFFIX)
    if out.exists() and not args.overwrite:
        raise ckpt_io.CheckpointExistsError(f"{out} exists; pass --overwrite to replace it")
    spec = RunSpec(data=ref, model=model_cfg, objective=objective, train=train_cfg)
    service = make_service(args, ws)
    print(f"training on {data.name} ({len(data.x_train)} train / {len(data.x_test)} test, {data.image_shape}) "
          f"on {device}", file=sys.stderr)
    run = service.submit(spec, label=out.stem, owner="cli", out=out, overwrite=args.overwrite)
    return finish_training(run, service)


def cmd_resume(args, ws: store.Workspace) -> int:
    """`train --resume RUN`: continue an interrupted or stopped run from its last complete epoch."""
    service = make_service(args, ws)
    run = service.resume(args.resume)
    print(f"resuming run {run.id} ({run.label}) after epoch {len(run.history)} of {run.spec.train.epochs}",
          file=sys.stderr)
    return finish_training(run, service)


def finish_training(run: Run, service: RunService) -> int:
    """Follow a training run to its end and say how it ended (the CLI's exit status)."""
    out = run.out
    print(f"run {run.id}: if this process is stopped, `python -m vae_core train --resume {run.id}` continues it",
          file=sys.stderr)
    try:
        follow([run], service, "training")
    except KeyboardInterrupt:
        pass
    if run.status == "failed":
        raise ValueError(run.error)
    if run.reason:
        print(run.reason, file=sys.stderr)
    if not run.history:
        print(f"no epoch completed, so nothing was saved to {out}", file=sys.stderr)
    elif run.saved:
        last = run.history[-1]
        print(f"saved {run.saved} (run {run.id}): test −ELBO {last['test_elbo']:.2f} nats (recon "
              f"{last['test_recon']:.2f} + KL {last['test_kl']:.2f}), mean epoch "
              f"{sum(r['seconds'] for r in run.history) / len(run.history):.2f} s")
    if run.history and run.status in ("done", "stopped"):
        print(collapse_summary(collapse.verdict(run.history[-1], run.spec)))
    return {"done": 0, "stopped": 130, "diverged": 1}.get(run.status, 1)


FIX_FLAGS = {"beta": "--beta", "free_bits": "--free-bits", "kl_target": "--kl-target", "capacity": "--capacity",
             "epochs": "--epochs", "gaussian_sigma": "--sigma"}  # what a collapse fix changes → its `train` flag


def collapse_summary(found: collapse.Verdict) -> str:
    """The end of a run's summary: whether it collapsed and why (`collapse.verdict`), and each fix as `train` flags."""
    lines = [f"collapse: {found.summary()}"]
    for rank, fix in enumerate(found.fixes, 1):
        flags = " ".join(f"{FIX_FLAGS[k]} {v:g}" for k, v in fix.changes.items())
        lines.append(f"  fix {rank}: {fix.label} (train again with {flags}): {fix.why}")
    return "\n".join(lines)


def evaluate_checkpoint(ckpt: ckpt_io.Checkpoint, data: Dataset, iwae_k: int, progress=None) -> dict:
    model = ckpt.model.to(data.device)
    y = data.y_test if model.config.n_classes else None
    res = evaluate_elbo(model, data.x_test, y)
    out = {"dataset": data.name, "n_test": len(data.x_test), "latent_dim": model.latent_dim,
           "test_elbo": res["elbo"], "test_recon": res["recon"], "test_kl": res["kl"],
           "active_units": res["active_units"], "kl_per_dim": res["kl_per_dim"], "iwae_k": iwae_k, "iwae_nll": None}
    if iwae_k > 0:
        out["iwae_nll"] = float(iwae_nll(model, data.x_test, y, k=iwae_k, progress=progress).mean())
    return out


def cmd_evaluate(args) -> int:
    device = pick_device(args.device)
    ws = store.Workspace()
    ckpt = ckpt_io.load(output_path(args.checkpoint, ws.models_dir, ckpt_io.SUFFIX), device=device)
    ref = data_ref(args, ws) if args.data_file else store.DataRef.from_info(ckpt.dataset)
    data = load_data(ref, args, device, ws)
    if data.image_shape != ckpt.config.image_shape:
        raise DataError(f"{data.name} has images of shape {data.image_shape}, the model expects "
                        f"{ckpt.config.image_shape}")
    bar = ProgressBar()
    t0 = time.monotonic()
    res = evaluate_checkpoint(ckpt, data, args.iwae_k, progress=lambda f: bar.draw(
        f, f"IWAE k={args.iwae_k} · elapsed {format_duration(time.monotonic() - t0)}") if args.iwae_k else None)
    if args.iwae_k:
        bar.close()
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.checkpoint} on {data.name} test set ({res['n_test']} images), nats per image:")
        print(f"  −ELBO          {res['test_elbo']:9.2f}")
        print(f"  reconstruction {res['test_recon']:9.2f}")
        print(f"  KL             {res['test_kl']:9.2f}")
        if res["iwae_nll"] is not None:
            print(f"  IWAE NLL (k={args.iwae_k}) {res['iwae_nll']:9.2f}")
        print(f"  active units   {res['active_units']:6d} of {res['latent_dim']}")
        print("  KL per dim     " + " ".join(f"{v:.2f}" for v in res["kl_per_dim"]))
    return 0


def cmd_sweep(args) -> int:
    device = pick_device(args.device)
    ws = store.Workspace()
    ref = data_ref(args, ws)
    data = load_data(ref, args, device, ws)
    spec = SweepSpec(dataset=ref.name, dataset_hash=ref.hash, latent_dim=args.latent_dim, architecture=args.arch,
                     hidden=_ints(args.hidden), autoregressive=args.autoregressive, epochs=args.epochs,
                     betas=parse_values(args.betas, "β"), free_bits=parse_values(args.free_bits, "free bits"),
                     warmups=parse_values(args.warmups, "warm-up"),
                     cycles=tuple(int(m) for m in parse_values(args.cycles, "cycles", 1, 1000, allow_empty=True,
                                                                   integers=True)),
                     ramp=args.ramp, capacities=parse_values(args.capacity, "capacity", high=10_000, allow_empty=True),
                     capacity_epochs=args.capacity_epochs, gamma=args.gamma,
                     kl_targets=parse_values(args.kl_target, "KL target", high=10_000, allow_empty=True),
                     aggressive=args.aggressive, n_train=args.n_train, n_test=args.n_test,
                     sigma2s=parse_values(args.sigma2, "σ²", 1e-6, 100, allow_empty=True),
                     lr=args.lr, batch_size=args.batch_size, seed=args.seed, iwae_k=args.iwae_k)
    folder = output_path(args.out, ws.sweeps_dir)
    service = make_service(args, ws)
    queued = submit_sweep(service, spec, folder, data.image_shape, owner="cli")
    n_runs = spec.n_runs
    print(f"sweep {folder}: {n_runs} runs, {n_runs - len(queued)} already there", file=sys.stderr)
    if queued:
        follow(queued, service, f"{len(queued)} runs")
    failed = [r for r in queued if r.status == "failed"]
    for r in failed:
        print(f"run {r.label} failed: {r.error}", file=sys.stderr)
    _, runs = load_sweep(folder)
    for run in runs:
        ev = run.evaluation
        if args.json:
            print(json.dumps({"name": run.name, **ev}))
        else:
            iwae = "—" if ev["iwae_nll"] is None else f"{ev['iwae_nll']:.2f}"
            print(f"{run.name:36s} rate {ev['rate']:7.2f}  distortion {ev['distortion']:8.2f}  −ELBO "
                  f"{ev['test_elbo']:8.2f}  AU {ev['active_units']:2d}  MI {ev['mutual_info']:5.2f}  IWAE NLL {iwae}")
    return 1 if failed else 0


def cmd_ppca_check(args) -> int:
    device = pick_device(args.device)
    ws = store.Workspace()
    data = load_data(data_ref(args, ws), args, device, ws)
    sigma2s = parse_values(args.sigma2, "σ²", low=1e-8, high=100.0)  # σ = √σ² within ModelConfig's 1e-4…10
    rows = ppca_check(data, sigma2s, args.latent_dim, seed=args.seed)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"linear VAE (d = {args.latent_dim}) vs probabilistic PCA on {data.name}, training set "
          f"({len(data.x_train):,} images), nats per image:")
    print(f"{'σ²':>8} {'AU closed':>10} {'AU trained':>11} {'rate closed':>12} {'rate trained':>13} "
          f"{'−log p pPCA':>12} {'−ELBO trained':>14} {'fit s':>6}")
    for r in rows:
        print(f"{r['sigma2']:8g} {r['au_closed_form']:10d} {r['au_trained']:11d} {r['rate_closed_form']:12.4f} "
              f"{r['rate_trained']:13.4f} {r['neg_loglik_closed_form']:12.4f} {r['neg_elbo_trained']:14.4f} "
              f"{r['seconds']:6.1f}")
    for r in rows:
        if r["au_closed_form_at_threshold"] != r["au_closed_form"]:
            missed = r["au_closed_form"] - r["au_closed_form_at_threshold"]
            print(f"σ² = {r['sigma2']:g}: {missed} eigenvalue(s) lie about 1 % or less above σ²: active in the "
                  f"closed form, but under the 0.01 variance threshold of the active-unit count")
    return 0


def cmd_previews(args) -> int:
    device = pick_device(args.device)
    for path in args.checkpoints or store.shipped_models():
        t0 = time.perf_counter()
        out = previews.write(previews.path_for(path), previews.build(path, device))
        print(f"{out} ({out.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - t0:.1f} s)")
    return 0


def add_previews(sub) -> None:
    c = sub.add_parser("previews", help="draw the pictures a fresh server shows before torch has loaded (the "
                       "Overview's, a still of the latent map) beside the shipped checkpoints, or the ones given")
    c.add_argument("checkpoints", nargs="*", help="checkpoints trained on a built-in dataset (default: the shipped ones)")
    c.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    c.set_defaults(func=cmd_previews)


def add_ppca_check(sub, data_args) -> None:
    c = sub.add_parser("ppca-check", help="linear VAE vs its closed-form optimum, probabilistic PCA (Lucas et al. "
                       "2019): active units and rate per σ²")
    c.add_argument("--dataset", default="digits", choices=BUILTIN)
    data_args(c)
    c.add_argument("--sigma2", default="0.05,0.1,0.2", help="comma-separated noise variances σ² of p(x|z)")
    c.add_argument("--latent-dim", type=int, default=64)
    c.add_argument("--seed", type=int, default=0, help="seed of the decoder's initial weights")
    c.add_argument("--json", action="store_true", help="one JSON object per σ², one per line")
    c.set_defaults(func=cmd_ppca_check)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp):
        sp.add_argument("--data-file", help="a .npz/.npy/.csv of images, or a folder or .zip of PNG/JPEG images "
                        "(each subfolder a class, named after it; no subfolders: no labels), instead of a built-in "
                        "dataset (stored in the workspace, so models trained on it open in the app with their data)")
        sp.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="for a folder or .zip of images: make every image N×N (scaled so its shorter side is "
                        "N, then centre-cropped); default: the most common size, scaled down to fit 64×64")
        sp.add_argument("--data-dir", help="folder with MNIST/Fashion-MNIST IDX files (else $VAE_DATA_DIR)")
        sp.add_argument("--download", action="store_true", help="download MNIST/Fashion-MNIST if not found")
        sp.add_argument("--timeout", type=float, default=30.0, help="download timeout per connection, s")
        sp.add_argument("--device", default="auto", choices=DEVICE_CHOICES)

    def executor_args(sp, workers_help: str):
        sp.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="where runs execute: this machine (local), or Ray tasks (needs the [ray] extra)")
        sp.add_argument("--workers", type=int, default=1, help=workers_help)
        sp.add_argument("--ray-address", default=None,
                        help="a Ray cluster's address (HOST:PORT); default $RAY_ADDRESS, else a local Ray on 127.0.0.1")

    dataset_help = (f"{', '.join(BUILTIN)}, or a dataset stored in the workspace by its file name or hash "
                    "(python -m vae_core datasets)")
    t = sub.add_parser("train", help="train a VAE and save a checkpoint")
    t.add_argument("--dataset", default="digits", help=dataset_help)
    data_args(t)
    t.add_argument("--preset", choices=["tutorial"], help="tutorial: MLP 784-400-d, BCE, Adam 1e-3, batch 128")
    t.add_argument("--latent-dim", type=int, default=2)
    t.add_argument("--arch", default="mlp", choices=["mlp", "conv", "linear"])
    t.add_argument("--hidden", default="512,256", help="MLP widths, comma-separated")
    t.add_argument("--channels", default="32,64", help="conv widths, comma-separated")
    t.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    t.add_argument("--sigma", type=float, default=None, help="fixed σ of the Gaussian likelihood (default: learned)")
    t.add_argument("--conditional", action="store_true", help="condition on the label (CVAE)")
    t.add_argument("--beta", type=float, default=1.0)
    t.add_argument("--free-bits", type=float, default=0.0, help="λ, nats per latent dimension")
    t.add_argument("--warmup", type=float, default=0.0, help="epochs of linear KL warm-up")
    t.add_argument("--kl-schedule", default="linear", choices=["linear", "cyclical"],
                   help="linear: warm-up over --warmup epochs (0: none); cyclical: Fu et al. 2019")
    t.add_argument("--cycles", type=int, default=4, help="cyclical annealing: number of cycles M")
    t.add_argument("--ramp", type=float, default=0.5, help="cyclical annealing: share R of each cycle that ramps")
    t.add_argument("--kl-target", type=float, default=0.0,
                   help="soft free bits: adapt the KL weight to keep the rate near this many nats (0: off)")
    t.add_argument("--capacity", type=float, default=0.0,
                   help="capacity annealing C_max, nats (Burgess et al. 2018): D + γ|KL − C| (0: off)")
    t.add_argument("--capacity-epochs", type=float, default=0.0, help="epochs for C to reach C_max (0: all)")
    t.add_argument("--gamma", type=float, default=100.0, help="capacity annealing's γ")
    t.add_argument("--aggressive", action="store_true",
                   help="aggressive encoder training until I(x;z) stops rising (He et al. 2019)")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--lr", type=float, default=TrainConfig.lr)
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="a checkpoint path (e.g. out/NAME.safetensors), or a bare NAME: "
                   "saved as $VAE_HOME/models/NAME.safetensors, where the app lists it")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted or stopped run (its id, printed when it "
                   "started) from its last complete epoch, with the result the uninterrupted run gives; the other "
                   "options are taken from the run")
    executor_args(t, "local executor: runs at once (one here)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test-set ELBO, IWAE NLL, active units of a checkpoint")
    e.add_argument("checkpoint", help="a checkpoint path, or the NAME of a model saved in the workspace")
    data_args(e)
    e.add_argument("--iwae-k", type=int, default=0, help="importance samples for the IWAE NLL (0: skip)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)
    w = sub.add_parser("sweep", help="train every combination of β, free bits and warm-up (collapse lab)")
    w.add_argument("--dataset", default="digits", help=dataset_help)
    data_args(w)
    w.add_argument("--latent-dim", type=int, default=16)
    w.add_argument("--arch", default="mlp", choices=["mlp", "conv", "linear"])
    w.add_argument("--hidden", default="256", help="MLP widths, comma-separated")
    w.add_argument("--autoregressive", action="store_true", help="PixelCNN decoder conditioned on z")
    w.add_argument("--epochs", type=int, default=20)
    w.add_argument("--betas", default="1", help="comma-separated β values")
    w.add_argument("--free-bits", default="0", help="comma-separated λ values, nats per latent dimension")
    w.add_argument("--warmups", default="0", help="comma-separated warm-up lengths, epochs")
    w.add_argument("--cycles", default="", help="cyclical annealing runs (one per β): comma-separated cycle counts M")
    w.add_argument("--ramp", type=float, default=0.5, help="cyclical annealing: share R of each cycle that ramps")
    w.add_argument("--capacity", default="", help="capacity annealing runs: comma-separated C_max, nats")
    w.add_argument("--capacity-epochs", type=float, default=0.0, help="epochs for C to reach C_max (0: all)")
    w.add_argument("--gamma", type=float, default=100.0, help="capacity annealing's γ")
    w.add_argument("--kl-target", default="", help="soft free bits runs (one per β): comma-separated targets, nats")
    w.add_argument("--aggressive", action="store_true", help="add aggressive encoder training runs (one per β)")
    w.add_argument("--sigma2", default="", help="with --arch linear: a pPCA sweep, one linear-Gaussian VAE per "
                   "comma-separated noise variance σ² (compare with ppca-check's closed form)")
    w.add_argument("--n-train", type=int, default=0, help="use the first N training images (0: all)")
    w.add_argument("--n-test", type=int, default=0, help="use the first N test images (0: all)")
    w.add_argument("--lr", type=float, default=1e-3)
    w.add_argument("--batch-size", type=int, default=128, help="(sweeps keep the tutorial's batch and rate)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--iwae-k", type=int, default=100, help="importance samples for each run's IWAE NLL")
    w.add_argument("--out", required=True, help="a sweep folder path, or a bare NAME: $VAE_HOME/sweeps/NAME, where "
                   "the app's collapse lab lists it")
    w.add_argument("--json", action="store_true", help="one JSON object per run, one per line")
    executor_args(w, "local executor: runs at once, each in its own worker process when more than one "
                     "(default 1: one after another, with all the cores)")
    w.set_defaults(func=cmd_sweep)
    add_ppca_check(sub, data_args)
    add_previews(sub)
    d = sub.add_parser("datasets", help="list the datasets stored in the workspace, or store one (--add)")
    d.add_argument("--add", metavar="FILE", help="a .npz/.npy/.csv, or a folder or .zip of PNG/JPEG images, to "
                   "store (decoded in parallel, with progress; Ctrl-C cancels and leaves nothing behind)")
    d.add_argument("--image-size", type=int, default=None, metavar="N", help="as for train --data-file")
    d.set_defaults(func=cmd_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ConfigError, ckpt_io.CheckpointError, ExecutorError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
