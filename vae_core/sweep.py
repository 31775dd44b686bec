"""Sweeps for the posterior-collapse lab: every combination of β, free bits λ and warm-up, trained on the same
data and model from the same initial weights, each evaluated the same way, each cached as a checkpoint in one
folder with a manifest (`sweep.json`).

A sweep is only a list of runs for the run service (`runs.py`): `submit_sweep` queues the runs that are not
already in the folder, so an interrupted sweep resumes where it stopped, and each finished run rewrites the
manifest. Each run is summarised by the quantities of the rate–distortion view (Alemi et al. 2018, "Fixing a
Broken ELBO"): rate R = E_x KL(q(z|x) ‖ p(z)) and distortion D = E_x E_q[−log p(x|z)], both in nats per test
image, with −ELBO = R + D; plus active units, the rate's split into mutual information and marginal KL, and
the IWAE NLL. Every entry of the manifest also holds the distortion of a decoder that ignores z on the sweep's data
(`collapsed_distortion`), the line a collapsed run reaches.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint as ckpt_io
from . import store
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, check_int, dataclass_from_dict
from .data import Dataset
from .device import default_device
from .estimates import Estimate, run_seconds
from .files import atomic_write, write_json
from .metrics import collapsed_decoder_distortion
from .runs import Run, RunService, RunSpec
from .store import DataRef

MANIFEST = "sweep.json"
OWNER = ".owner"  # who made a sweep folder (a browser id, or `store.SERVER`)
MAX_RUNS = 64


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains: one model shape and schedule, and lists of objective settings: every combination of
    β, free bits λ and warm-up, plus, at each β, one run for each number of cycles of cyclical annealing, each
    soft KL target and aggressive encoder training when asked, and one run per capacity C_max (which does not use
    β). So one rate–distortion plane holds β-VAE, free bits, warm-up, cyclical, capacity, soft free bits and
    aggressive runs side by side, each cure against the collapse that its β causes (`config.ObjectiveConfig` and
    `objectives.py` say what each does)."""

    dataset: str = "digits"
    latent_dim: int = 16
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (256,)
    autoregressive: bool = False
    epochs: int = 20
    betas: tuple[float, ...] = (1.0,)
    free_bits: tuple[float, ...] = (0.0,)
    warmups: tuple[float, ...] = (0.0,)
    cycles: tuple[int, ...] = ()
    ramp: float = 0.5
    capacities: tuple[float, ...] = ()
    capacity_epochs: float = 0.0
    gamma: float = 100.0
    kl_targets: tuple[float, ...] = ()
    aggressive: bool = False
    sigma2s: tuple[float, ...] = ()  # a pPCA sweep: one linear-Gaussian VAE per noise variance σ² (arch "linear")
    n_train: int = 0  # 0: the whole training set
    n_test: int = 0
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    iwae_k: int = 100
    dataset_hash: str | None = None  # a user's dataset in the workspace (`dataset` is then its file name)

    def __post_init__(self) -> None:
        for name in ("betas", "free_bits", "warmups"):
            if not getattr(self, name):
                raise ConfigError(f"{name} needs at least one value")
        if (self.architecture == "linear") != bool(self.sigma2s):
            raise ConfigError("a linear (pPCA) sweep needs σ² values, and σ² values need the linear architecture")
        check_int("number of runs", self.n_runs, 1, MAX_RUNS)
        check_int("n_train", self.n_train, 0, 10**7)
        check_int("n_test", self.n_test, 0, 10**7)
        check_int("iwae_k", self.iwae_k, 0, 100_000)
        self.train_config()

    def settings(self) -> list[ObjectiveConfig]:
        """The objective of every run, in the sweep's order."""
        grid = [ObjectiveConfig(beta=b, free_bits=f, warmup_epochs=w)
                for b, f, w in itertools.product(self.betas, self.free_bits, self.warmups)]
        cures = ([ObjectiveConfig(beta=b, kl_schedule="cyclical", cycles=int(m), ramp=self.ramp)
                  for m in self.cycles for b in self.betas]
                 + [ObjectiveConfig(capacity=c, capacity_epochs=self.capacity_epochs, gamma=self.gamma)
                    for c in self.capacities]
                 + [ObjectiveConfig(beta=b, kl_target=t) for t in self.kl_targets for b in self.betas]
                 + ([ObjectiveConfig(beta=b, aggressive=True) for b in self.betas] if self.aggressive else []))
        return grid + [c for c in cures if c not in grid]

    @property
    def n_runs(self) -> int:
        return max(1, len(self.sigma2s)) * len(self.settings())

    def data_ref(self) -> DataRef:
        return DataRef(self.dataset, self.dataset_hash, n_train=self.n_train, n_test=self.n_test)

    def model_config(self, image_shape, sigma2: float | None = None) -> ModelConfig:
        """The model of the sweep's runs; a pPCA sweep's at noise variance `sigma2` (default: its first)."""
        if self.sigma2s:
            sigma2 = self.sigma2s[0] if sigma2 is None else sigma2
            return ModelConfig(image_shape=tuple(image_shape), latent_dim=self.latent_dim, architecture="linear",
                               likelihood="gaussian", gaussian_sigma=sigma2 ** 0.5)
        return ModelConfig(image_shape=tuple(image_shape), latent_dim=self.latent_dim, architecture=self.architecture,
                           hidden=self.hidden, autoregressive=self.autoregressive)

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)

    def run_specs(self, image_shape) -> list[tuple[str, RunSpec]]:
        """(file stem, run spec) of every run, in the sweep's order (σ² by σ² for a pPCA sweep)."""
        runs = []
        for sigma2 in self.sigma2s or (None,):
            base = RunSpec(data=self.data_ref(), model=self.model_config(image_shape, sigma2),
                           train=self.train_config(), lab_metrics=True, iwae_k=self.iwae_k)
            suffix = "" if sigma2 is None else f"_s2{sigma2:g}"
            runs += [(run_name(obj) + suffix, dataclasses.replace(base, objective=obj)) for obj in self.settings()]
        return runs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        return dataclass_from_dict(cls, data)


def parse_values(text: str, what: str, low: float = 0.0, high: float = 1000.0, allow_empty: bool = False,
                 integers: bool = False) -> tuple[float, ...]:
    """'0.5, 1, 4' → (0.5, 1.0, 4.0), each checked to lie in [low, high] (and to be whole, with `integers`);
    duplicates dropped, order kept. An empty text is an error unless `allow_empty` (then it gives ())."""
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
        if integers and v != int(v):
            raise ConfigError(f"{what}: {v:g} is not a whole number")
        if v not in values:
            values.append(v)
    if not values and not allow_empty:
        raise ConfigError(f"{what}: give at least one value")
    return tuple(values)


def run_name(obj: ObjectiveConfig) -> str:
    """The run's file stem: β, λ and warm-up, then only the cures that are on (so older sweeps keep their names)."""
    name = f"beta{obj.beta:g}_fb{obj.free_bits:g}_wu{obj.warmup_epochs:g}"
    if obj.kl_schedule == "cyclical":
        name += f"_cyc{obj.cycles}r{obj.ramp:g}"
    if obj.capacity > 0:
        name += f"_cap{obj.capacity:g}e{obj.capacity_epochs:g}g{obj.gamma:g}"
    if obj.kl_target > 0:
        name += f"_kt{obj.kl_target:g}"
    if obj.aggressive:
        name += "_aggr"
    return name


@dataclass
class SweepRun:
    """A finished run of a sweep, as saved in its folder."""

    name: str
    path: Path
    checkpoint: ckpt_io.Checkpoint
    evaluation: dict


def _cached_evaluation(path: Path, spec: RunSpec) -> dict | None:
    """The evaluation of the run already saved at `path` with exactly `spec`, else None (it will be trained)."""
    try:
        meta = ckpt_io.peek(path)
    except ckpt_io.CheckpointError:
        return None
    extra = meta.get("extra") or {}
    same = (extra.get("run") or {}).get("spec") == json.loads(json.dumps(spec.to_dict()))
    return extra.get("evaluation") if same else None


def _manifest_entry(name: str, path: Path, evaluation: dict, obj: ObjectiveConfig) -> dict:
    return {"name": name, "file": path.name, "beta": obj.beta, "free_bits": obj.free_bits,
            "warmup": obj.warmup_epochs, "objective": obj.to_dict(), **evaluation}


_MANIFEST_LOCK = threading.Lock()


def collapsed_distortion(spec: SweepSpec, data: Dataset) -> float | None:
    """The distortion of a Bernoulli decoder that ignores z (`metrics.collapsed_decoder_distortion`) on `data`,
    the sweep's images (`spec.data_ref()`): where a collapsed run lands on the R–D plane. None for a Gaussian
    likelihood, whose line would depend on σ."""
    if spec.model_config(data.image_shape).likelihood != "bernoulli":
        return None
    return collapsed_decoder_distortion(data.x_train, data.x_test)


def write_manifest(folder: Path, spec: SweepSpec, image_shape, *, collapsed: float | None) -> list[dict]:
    """Rewrite `folder/sweep.json` from the runs saved in it, in the sweep's order (only complete runs); each
    entry also gets `collapsed`, the sweep's `collapsed_distortion`."""
    with _MANIFEST_LOCK:
        entries = []
        for name, run_spec in spec.run_specs(image_shape):
            path = folder / f"{name}{ckpt_io.SUFFIX}"
            evaluation = _cached_evaluation(path, run_spec)
            if evaluation is not None:
                entry = _manifest_entry(name, path, evaluation, run_spec.objective)
                if spec.sigma2s:
                    entry["sigma2"] = run_spec.model.gaussian_sigma ** 2
                entries.append({**entry, "collapsed_distortion": collapsed})
        write_json(folder / MANIFEST, {"format_version": 1, "spec": spec.to_dict(),
                                       "image_shape": list(image_shape), "runs": entries})
        return entries


def probe_estimates(spec: SweepSpec, image_shape, data: Dataset) -> dict[str, Estimate]:
    """{run name: its probe estimate on `data` (the sweep's data)}: one probe per kind of run — aggressive training
    runs an inner encoder loop per step, the other objectives' settings cost the same (a pPCA sweep's noise
    variances too)."""
    probes: dict[bool, Estimate] = {}
    out = {}
    for name, run_spec in spec.run_specs(image_shape):
        kind = run_spec.objective.aggressive
        if kind not in probes:
            probes[kind] = run_seconds(run_spec, data)
        out[name] = probes[kind]
    return out


def submit_sweep(service: RunService, spec: SweepSpec, folder: str | os.PathLike, image_shape, *,
                 owner: str | None = None, estimates: dict[str, Estimate] | None = None) -> list[Run]:
    """Queue every run of `spec` not already saved in `folder`; each finished run rewrites the manifest.
    `estimates` ({run name: probe estimate}, `probe_estimates`) let the queue say when each will start.
    Returns the queued runs (empty when the whole sweep is already there). A folder another visitor made is
    theirs: their sweep is never rewritten (SweepError); the CLI (`owner` None or "cli") is the server's owner."""
    folder = Path(folder)
    who = store.SERVER if owner in (None, "cli") else owner
    if who != store.SERVER and (folder / MANIFEST).is_file() and sweep_owner(folder) != who:
        raise SweepError(f"a sweep named {folder.name!r} was made by another user of this server, and only they "
                         "can add to it; choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / OWNER).is_file() and not (folder / MANIFEST).is_file():  # a new sweep: its maker owns it
        atomic_write(folder / OWNER, who.encode())
    collapsed = collapsed_distortion(spec, store.load(spec.data_ref(), default_device(), service.workspace))
    write_manifest(folder, spec, image_shape, collapsed=collapsed)
    queued = []
    for name, run_spec in spec.run_specs(image_shape):
        path = folder / f"{name}{ckpt_io.SUFFIX}"
        if _cached_evaluation(path, run_spec) is None:
            queued.append(service.submit(run_spec, label=f"{folder.name}/{name}", owner=owner, group=str(folder),
                                         out=path, overwrite=True, keep_partial=False,
                                         expected_seconds=(estimates or {}).get(name),
                                         on_finish=lambda _run: write_manifest(folder, spec, image_shape,
                                                                               collapsed=collapsed)))
    return queued


class SweepError(ValueError):
    """A saved sweep folder cannot be read, or written by this user."""


def sweep_owner(folder: Path) -> str:
    """Who made the sweep in `folder` (`store.SERVER` for the CLI and for sweeps from before owners were kept)."""
    try:
        return (Path(folder) / OWNER).read_text().strip() or store.SERVER
    except OSError:
        return store.SERVER


def load_sweep(out_dir: str | os.PathLike, device="cpu") -> tuple[SweepSpec, list[SweepRun]]:
    """A saved sweep: its spec and every finished run (checkpoint + evaluation), in the sweep's order."""
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
        evaluation = {k: v for k, v in entry.items() if k not in ("name", "file")}
        runs.append(SweepRun(str(entry.get("name", path.stem)), path, ck, evaluation))
    return spec, runs
