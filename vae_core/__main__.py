"""Headless command line: `python -m vae_core train|evaluate|sweep …`, on the same code as the app."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt_io
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, tutorial_preset
from .data import BUILTIN, DataError, Dataset, load_array_file, load_dataset, split_arrays
from .device import DEVICE_CHOICES, pick_device
from .metrics import evaluate_elbo, iwae_nll
from .model import VAE
from .train import fit


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


def get_dataset(args, device) -> Dataset:
    if getattr(args, "data_file", None):
        arrays = load_array_file(args.data_file)
        return split_arrays(Path(args.data_file).stem, arrays.x, arrays.y, device=device)
    return load_dataset(args.dataset, device, data_dir=args.data_dir, download=args.download, timeout=args.timeout)


def cmd_train(args) -> int:
    device = pick_device(args.device)
    data = get_dataset(args, device)
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
    objective = ObjectiveConfig(beta=args.beta, free_bits=args.free_bits, warmup_epochs=args.warmup)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ckpt_io.CheckpointExistsError(f"{out} exists; pass --overwrite to replace it")

    torch.manual_seed(train_cfg.seed)  # reproducible initial weights
    model = VAE(model_cfg)
    bar = ProgressBar()
    state = {"epoch": 0}

    def on_step(step, steps, loss):
        bar.draw((state["epoch"] + (step + 1) / steps) / train_cfg.epochs,
                 f"epoch {state['epoch'] + 1}/{train_cfg.epochs} loss {loss.total.item():.2f}")

    def on_epoch(rec, _model):
        state["epoch"] = rec["epoch"]
        bar.draw(rec["epoch"] / train_cfg.epochs, f"epoch {rec['epoch']}/{train_cfg.epochs} "
                 f"test −ELBO {rec['test_elbo']:.2f} ({rec['seconds']:.1f} s)", force=True)

    print(f"training on {data.name} ({len(data.x_train)} train / {len(data.x_test)} test, {data.image_shape}) "
          f"on {device}", file=sys.stderr)
    result = fit(model, data, objective, train_cfg, on_step=on_step, on_epoch=on_epoch)
    bar.close()
    if result.stop_reason:
        print(result.stop_reason, file=sys.stderr)
    ckpt = ckpt_io.Checkpoint(model=model, objective=objective, train=train_cfg, dataset=data.info(),
                              history=result.history, extra={"preset": args.preset} if args.preset else {})
    ckpt_io.save(out, ckpt, overwrite=args.overwrite)
    if result.history:
        last = result.history[-1]
        print(f"saved {out}: test −ELBO {last['test_elbo']:.2f} nats (recon {last['test_recon']:.2f} + "
              f"KL {last['test_kl']:.2f}), mean epoch {sum(r['seconds'] for r in result.history) / len(result.history):.2f} s")
    return 1 if result.diverged else 0


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
    ckpt = ckpt_io.load(args.checkpoint, device=device)
    if not args.data_file:
        args.dataset = ckpt.dataset.get("name", "")
    data = get_dataset(args, device)
    if data.image_shape != ckpt.config.image_shape:
        raise DataError(f"{data.name} has images of shape {data.image_shape}, the model expects "
                        f"{ckpt.config.image_shape}")
    bar = ProgressBar()
    res = evaluate_checkpoint(ckpt, data, args.iwae_k,
                              progress=lambda f: bar.draw(f, f"IWAE k={args.iwae_k}") if args.iwae_k else None)
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
    from .sweep import SweepSpec, parse_values, run_sweep

    device = pick_device(args.device)
    data = get_dataset(args, device)
    spec = SweepSpec(dataset=data.name, latent_dim=args.latent_dim, architecture=args.arch, hidden=_ints(args.hidden),
                     autoregressive=args.autoregressive, epochs=args.epochs, betas=parse_values(args.betas, "β"),
                     free_bits=parse_values(args.free_bits, "free bits"), warmups=parse_values(args.warmups, "warm-up"), n_train=args.n_train,
                     n_test=args.n_test, lr=args.lr, batch_size=args.batch_size, seed=args.seed, iwae_k=args.iwae_k)
    n_runs = len(spec.settings())
    bar = ProgressBar()
    state = {"run": 0, "epoch": 0, "label": ""}

    def on_run(i, n, obj):
        state.update(run=i, epoch=0, label=f"run {i + 1}/{n} β={obj.beta:g} λ={obj.free_bits:g} warm-up={obj.warmup_epochs:g}")

    def on_step(step, steps, loss):
        done = state["run"] + (state["epoch"] + (step + 1) / steps) / spec.epochs
        bar.draw(done / n_runs, f"{state['label']} epoch {state['epoch'] + 1}/{spec.epochs}")

    def on_epoch(rec, _model):
        state["epoch"] = rec["epoch"]

    runs = run_sweep(spec, data, args.out, on_run=on_run, on_step=on_step, on_epoch=on_epoch)
    bar.draw(1.0, f"{len(runs)} runs in {args.out}", force=True)
    bar.close()
    for run in runs:
        ev = run.evaluation
        if args.json:
            print(json.dumps({"name": run.name, **ev}))
        else:
            iwae = "—" if ev["iwae_nll"] is None else f"{ev['iwae_nll']:.2f}"
            print(f"{run.name:28s} rate {ev['rate']:7.2f}  distortion {ev['distortion']:8.2f}  −ELBO "
                  f"{ev['test_elbo']:8.2f}  AU {ev['active_units']:2d}  MI {ev['mutual_info']:5.2f}  IWAE NLL {iwae}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp):
        sp.add_argument("--data-file", help="a .npz/.npy/.csv of images instead of a built-in dataset")
        sp.add_argument("--data-dir", help="folder with MNIST/Fashion-MNIST IDX files (else $VAE_DATA_DIR)")
        sp.add_argument("--download", action="store_true", help="download MNIST/Fashion-MNIST if not found")
        sp.add_argument("--timeout", type=float, default=30.0, help="download timeout per connection, s")
        sp.add_argument("--device", default="auto", choices=DEVICE_CHOICES)

    t = sub.add_parser("train", help="train a VAE and save a checkpoint")
    t.add_argument("--dataset", default="digits", choices=BUILTIN)
    data_args(t)
    t.add_argument("--preset", choices=["tutorial"], help="tutorial: MLP 784-400-d, BCE, Adam 1e-3, batch 128")
    t.add_argument("--latent-dim", type=int, default=2)
    t.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
    t.add_argument("--hidden", default="512,256", help="MLP widths, comma-separated")
    t.add_argument("--channels", default="32,64", help="conv widths, comma-separated")
    t.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    t.add_argument("--sigma", type=float, default=None, help="fixed σ of the Gaussian likelihood (default: learned)")
    t.add_argument("--conditional", action="store_true", help="condition on the label (CVAE)")
    t.add_argument("--beta", type=float, default=1.0)
    t.add_argument("--free-bits", type=float, default=0.0, help="λ, nats per latent dimension")
    t.add_argument("--warmup", type=float, default=0.0, help="epochs of linear KL warm-up")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--lr", type=float, default=TrainConfig.lr)
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="checkpoint path, e.g. checkpoints/NAME.safetensors")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test-set ELBO, IWAE NLL, active units of a checkpoint")
    e.add_argument("checkpoint")
    data_args(e)
    e.add_argument("--iwae-k", type=int, default=0, help="importance samples for the IWAE NLL (0: skip)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)
    w = sub.add_parser("sweep", help="train every combination of β, free bits and warm-up (collapse lab)")
    w.add_argument("--dataset", default="digits", choices=BUILTIN)
    data_args(w)
    w.add_argument("--latent-dim", type=int, default=16)
    w.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
    w.add_argument("--hidden", default="256", help="MLP widths, comma-separated")
    w.add_argument("--autoregressive", action="store_true", help="PixelCNN decoder conditioned on z")
    w.add_argument("--epochs", type=int, default=20)
    w.add_argument("--betas", default="1", help="comma-separated β values")
    w.add_argument("--free-bits", default="0", help="comma-separated λ values, nats per latent dimension")
    w.add_argument("--warmups", default="0", help="comma-separated warm-up lengths, epochs")
    w.add_argument("--n-train", type=int, default=0, help="use the first N training images (0: all)")
    w.add_argument("--n-test", type=int, default=0, help="use the first N test images (0: all)")
    w.add_argument("--lr", type=float, default=1e-3)
    w.add_argument("--batch-size", type=int, default=128, help="(sweeps keep the tutorial's batch and rate)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--iwae-k", type=int, default=100, help="importance samples for each run's IWAE NLL")
    w.add_argument("--out", required=True, help="sweep folder, e.g. checkpoints/sweeps/NAME")
    w.add_argument("--json", action="store_true", help="one JSON object per run, one per line")
    w.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ConfigError, ckpt_io.CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
