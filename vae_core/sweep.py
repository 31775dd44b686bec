"""Sweeps for the posterior-collapse lab: train every combination of β, free bits λ and warm-up on the same
data and model, evaluate each run the same way, and cache every run as a checkpoint in one folder.

Each run is summarised by the quantities of the rate–distortion view (Alemi et al. 2018, "Fixing a Broken
ELBO"): rate R = E_x KL(q(z|x) ‖ p(z)) and distortion D = E_x E_q[−log p(x|z)], both in nats per test image,
with −ELBO = R + D; plus active units, mutual information and the IWAE NLL.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint as ckpt_io
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, check_int, dataclass_from_dict
from .data import Dataset
from .metrics import evaluate_elbo, iwae_nll, mutual_information
from .model import VAE
from .train import fit

MANIFEST = "sweep.json"
MAX_RUNS = 64


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains: one model shape and schedule, and lists of objective settings (every combination)."""

    dataset: str = "digits"
    latent_dim: int = 16
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (256,)
    autoregressive: bool = False
    epochs: int = 20
    betas: tuple[float, ...] = (1.0,)
    free_bits: tuple[float, ...] = (0.0,)
    warmups: tuple[float, ...] = (0.0,)
    n_train: int = 0  # 0: the whole training set
    n_test: int = 0
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    iwae_k: int = 100

    def __post_init__(self) -> None:
        for name in ("betas", "free_bits", "warmups"):
            if not getattr(self, name):
                raise ConfigError(f"{name} needs at least one value")
        check_int("number of runs", len(self.settings()), 1, MAX_RUNS)
        check_int("n_train", self.n_train, 0, 10**7)
        check_int("n_test", self.n_test, 0, 10**7)
        check_int("iwae_k", self.iwae_k, 0, 100_000)
        self.train_config()

    def settings(self) -> list[ObjectiveConfig]:
        return [ObjectiveConfig(beta=b, free_bits=f, warmup_epochs=w)
                for b, f, w in itertools.product(self.betas, self.free_bits, self.warmups)]

    def model_config(self, image_shape) -> ModelConfig:
        return ModelConfig(image_shape=tuple(image_shape), latent_dim=self.latent_dim, architecture=self.architecture,
                           hidden=self.hidden, autoregressive=self.autoregressive)

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        return dataclass_from_dict(cls, data)


def parse_values(text: str, what: str, low: float = 0.0, high: float = 1000.0) -> tuple[float, ...]:
    """'0.5, 1, 4' → (0.5, 1.0, 4.0), each checked to lie in [low, high]; duplicates dropped, order kept."""
    values: list[float] = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(f"{what}: {part!r} is not a number; write values separated by commas, e.g. 0.5, 1, 4") from None
        if not low <= v <= high or v != v:
            raise ConfigError(f"{what}: {v:g} is outside [{low:g}, {high:g}]")
        if v not in values:
            values.append(v)
    if not values:
        raise ConfigError(f"{what}: give at least one value")
    return tuple(values)


def run_name(obj: ObjectiveConfig) -> str:
    return f"beta{obj.beta:g}_fb{obj.free_bits:g}_wu{obj.warmup_epochs:g}"


def evaluate_run(model: VAE, obj: ObjectiveConfig, data: Dataset, iwae_k: int,
                 progress: Callable[[float], None] | None = None) -> dict:
    """The lab's numbers for one trained model on the test set, nats per image; rate + distortion = test_elbo."""
    res = evaluate_elbo(model, data.x_test)
    out = {"beta": obj.beta, "free_bits": obj.free_bits, "warmup": obj.warmup_epochs,
           "rate": res["kl"], "distortion": res["recon"], "test_elbo": res["elbo"],
           "active_units": res["active_units"], "mutual_info": mutual_information(model, data.x_test),
           "iwae_nll": None, "iwae_k": iwae_k, "kl_per_dim": res["kl_per_dim"]}
    if iwae_k > 0:
        out["iwae_nll"] = float(iwae_nll(model, data.x_test, k=iwae_k, progress=progress).mean())
    return out


@dataclass
class Run:
    name: str
    path: Path
    checkpoint: ckpt_io.Checkpoint
    evaluation: dict


def _cached(path: Path, spec: SweepSpec, obj: ObjectiveConfig, model_cfg: ModelConfig) -> ckpt_io.Checkpoint | None:
    """A run already on disk with exactly these settings (else None: it will be retrained)."""
    if not path.is_file():
        return None
    try:
        ck = ckpt_io.load(path)
    except ckpt_io.CheckpointError:
        return None
    try:
        same_spec = SweepSpec.from_dict(ck.extra.get("sweep")) == spec
    except ConfigError:
        return None
    same = (same_spec and ck.config == model_cfg and ck.objective == obj and ck.train == spec.train_config()
            and "evaluation" in ck.extra)
    return ck if same else None


def run_sweep(spec: SweepSpec, data: Dataset, out_dir: str | os.PathLike, *,
              on_run: Callable[[int, int, ObjectiveConfig], None] | None = None,
              on_step=None, on_epoch=None, should_stop: Callable[[], bool] | None = None,
              on_eval: Callable[[float], None] | None = None) -> list[Run]:
    """Train and evaluate every setting in turn; runs already cached in `out_dir` are reused, so an
    interrupted sweep resumes where it stopped. Writes `out_dir/sweep.json` after every run."""
    out_dir = Path(out_dir)
    data = data.subset(spec.n_train, spec.n_test)
    model_cfg = spec.model_config(data.image_shape)
    runs: list[Run] = []
    settings = spec.settings()
    for i, obj in enumerate(settings):
        if should_stop and should_stop():
            break
        if on_run:
            on_run(i, len(settings), obj)
        name = run_name(obj)
        path = out_dir / f"{name}{ckpt_io.SUFFIX}"
        ck = _cached(path, spec, obj, model_cfg)
        if ck is None:
            torch.manual_seed(spec.seed)  # same initial weights for every run: only the objective differs
            model = VAE(model_cfg)
            result = fit(model, data, obj, spec.train_config(), on_step=on_step, on_epoch=on_epoch,
                         should_stop=should_stop)
            if result.stop_reason and not result.diverged:
                break  # stopped by the user: keep no half-trained run in the cache
            evaluation = evaluate_run(model, obj, data, spec.iwae_k, on_eval)
            evaluation["stop_reason"] = result.stop_reason
            ck = ckpt_io.Checkpoint(model=model, objective=obj, train=spec.train_config(), dataset=data.info(),
                                    history=result.history, extra={"sweep": spec.to_dict(), "evaluation": evaluation})
            ckpt_io.save(path, ck, overwrite=True)
        runs.append(Run(name, path, ck, ck.extra["evaluation"]))
        write_manifest(out_dir, spec, runs)
    return runs


def write_manifest(out_dir: Path, spec: SweepSpec, runs: list[Run]) -> None:
    body = json.dumps({"format_version": 1, "spec": spec.to_dict(),
                       "runs": [{"name": r.name, "file": r.path.name, **r.evaluation} for r in runs]}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=out_dir)
    with os.fdopen(fd, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_dir / MANIFEST)


class SweepError(ValueError):
    """A saved sweep folder cannot be read."""


def load_sweep(out_dir: str | os.PathLike, device="cpu") -> tuple[SweepSpec, list[Run]]:
    """A saved sweep: its spec and every run (checkpoint + evaluation), in the order they were run."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
        spec = SweepSpec.from_dict(manifest["spec"])
        entries = manifest["runs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SweepError(f"{out_dir.name} is not a readable sweep folder ({err})") from None
    runs = []
    for entry in entries:
        if not isinstance(entry, dict) or "file" not in entry:
            raise SweepError(f"{out_dir.name}/{MANIFEST} has a malformed run entry")
        path = out_dir / Path(str(entry["file"])).name  # never leaves the folder
        try:
            ck = ckpt_io.load(path, device=device)
        except ckpt_io.CheckpointError as err:
            raise SweepError(f"run {entry.get('name')}: {err}") from None
        runs.append(Run(str(entry.get("name", path.stem)), path, ck, ck.extra.get("evaluation", {})))
    return spec, runs


def list_sweeps(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []
