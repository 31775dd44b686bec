"""Training replay: how a run's posterior moves, epoch by epoch, recorded on a fixed probe of test images so that
collapse can be watched as it happens (and scrubbed, played and exported as a GIF by `replay_plots`).

After every epoch the recorder encodes the probe (1,000 test images, a seeded subsample) and keeps: the
posterior means and the covariance of q(z|x) on a 2-D map (the raw latent when d = 2, otherwise a PCA of the
means, fixed afterwards from the last epoch so that the map does not turn between frames), the KL per dimension,
the active units and I(x;z) on the probe, and a small decoder lattice (k × k images decoded on a grid of ±2 prior
standard deviations along the map's two axes). The file is a `.replay` safetensors file beside the run's
checkpoint: tensors plus JSON, never pickled.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as np_load
from safetensors.numpy import save as np_save

from . import pictures
from .files import atomic_write
from .metrics import active_units, mutual_information
from .model import VAE
from .objectives import gaussian_kl_per_dim
from .projection import subsample

SUFFIX = ".replay"
PROBE = 1000  # test images recorded (I(x;z) costs P² · d: 1,000 keeps recording under 10 % of an epoch)
LATTICE = 6  # decoded images per side of the lattice
SPAN = 2.0  # the lattice covers ±SPAN prior standard deviations along each map axis
MAX_FRAMES = 60  # epochs recorded (and shown) of a longer run: evenly spaced, the first and the last included
BUDGET = 0.1  # recording may take at most this share of the training time so far (beyond the first and last frames)
FORMAT_VERSION = 1
MAX_REPLAY_BYTES = 200 * 2**20


def frame_indices(n_epochs: int, most: int = MAX_FRAMES) -> np.ndarray:
    """0-based indices of the epochs that become frames: all of them, or `most` evenly spaced ones."""
    if n_epochs <= most:
        return np.arange(n_epochs)
    return np.unique(np.round(np.linspace(0, n_epochs - 1, most)).astype(int))


class ReplayError(ValueError):
    """A replay file cannot be read."""


@dataclass
class Replay:
    """One run's recording; E epochs, P probe images, d latent dimensions."""

    epochs: np.ndarray  # (E,) epoch numbers, 1-based
    probe_ids: np.ndarray  # (P,) indices into the test set
    labels: np.ndarray | None  # (P,) class labels of the probe
    means: np.ndarray  # (E, P, 2) posterior means on the map
    cov: np.ndarray  # (E, P, 3) the map's 2×2 posterior covariance per image: var x, cov xy, var y
    kl_per_dim: np.ndarray  # (E, d) nats, probe mean
    active_units: np.ndarray  # (E,)
    mutual_info: np.ndarray  # (E,) I(x;z) on the probe, nats
    lattice: np.ndarray | None  # (E, H', W'[, C]) uint8 tiled decoder lattice (None: autoregressive decoder)
    axes: tuple[str, str]  # the map's axis titles
    record_seconds: list[float] = field(default_factory=list)  # time spent recording each epoch
    class_names: list[str] | None = None

    @property
    def n_epochs(self) -> int:
        return len(self.epochs)


class Recorder:
    """Records a `Replay` while `fit` trains: call `record(epoch, model)` from the epoch callback, then `finish()`."""

    def __init__(self, x_test: torch.Tensor, y_test: torch.Tensor | None, *, probe: int = PROBE,
                 lattice: bool = True, y_condition: bool = False, class_names=None, epochs: int | None = None):
        """`epochs`: the run's length, when known: then at most MAX_FRAMES evenly spaced epochs are recorded, the
        first and the last always."""
        ids = subsample(len(x_test), probe, seed=0)
        self.probe_ids = ids
        self.x = x_test[torch.as_tensor(ids, device=x_test.device)]  # (P, C, H, W)
        self.y = None if y_test is None else y_test[torch.as_tensor(ids, device=x_test.device)]  # (P,)
        self.y_condition, self.lattice, self.class_names = y_condition, lattice, class_names
        self.epochs: list[int] = []
        self.mu: list[np.ndarray] = []  # (P, d) per epoch, kept until the map is fixed at the end
        self.var: list[np.ndarray] = []  # (P, d)
        self.kl: list[np.ndarray] = []
        self.au: list[int] = []
        self.mi: list[float] = []
        self.lattices: list[np.ndarray] = []
        self.seconds: list[float] = []
        self._plane: np.ndarray | None = None  # (2, d) the previous epoch's lattice plane, for sign continuity
        self.planned = None if epochs is None else set((frame_indices(epochs) + 1).tolist())  # 1-based epochs
        self.last = epochs
        self.trained = 0.0  # seconds of training (and test evaluation) so far, as reported to `record`

    @torch.no_grad()
    def record(self, epoch: int, model: VAE, epoch_seconds: float | None = None) -> float:
        """Record the model after `epoch` (1-based) if it is one of the planned frames and, given the epoch's
        training time, if recording stays within BUDGET of the training time so far (when one frame costs more
        than that, frames are skipped; the first and the last epoch are always recorded). The seconds it took."""
        self.trained += epoch_seconds or 0.0
        if self.planned is not None and epoch not in self.planned:
            return 0.0
        if epoch_seconds is not None and self.seconds and epoch != self.last:
            cost = sum(self.seconds) / len(self.seconds)  # a frame's measured cost
            if sum(self.seconds) + cost > BUDGET * self.trained:
                return 0.0
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        y = self.y if self.y_condition else None
        mu, logvar = model.encode(self.x, y)  # (P, d), (P, d)
        mu_np, var_np = mu.double().cpu().numpy(), logvar.double().exp().cpu().numpy()
        kl = gaussian_kl_per_dim(mu, logvar).mean(0).double().cpu().numpy()  # (d,)
        self.epochs.append(int(epoch))
        self.mu.append(mu_np)
        self.var.append(var_np)
        self.kl.append(kl)
        self.au.append(active_units(mu))
        self.mi.append(mutual_information(model, self.x, y))
        if self.lattice and not model.config.autoregressive:
            self.lattices.append(self._lattice(model, mu_np))
        model.train(was_training)
        self.seconds.append(time.perf_counter() - t0)
        return self.seconds[-1]

    def _lattice(self, model: VAE, mu: np.ndarray) -> np.ndarray:
        """k × k decoded means on a grid of ±SPAN along the map's axes: the raw z when d = 2, else this epoch's top
        two principal directions of the means (signs kept from the previous epoch, so the picture does not flip)."""
        d = mu.shape[1]
        if d == 2:
            plane = np.eye(2)
        else:
            _, _, vt = np.linalg.svd(mu - mu.mean(0), full_matrices=False)
            plane = vt[:2] if len(vt) >= 2 else np.eye(2, d)  # (2, d) unit rows
            if self._plane is not None:
                plane = plane * np.sign(np.sum(plane * self._plane, axis=1, keepdims=True) + 1e-12)
            self._plane = plane
        u = np.linspace(-SPAN, SPAN, LATTICE)
        grid = np.stack(np.meshgrid(u, u[::-1]), axis=-1).reshape(-1, 2)  # (k², 2), top row = high y
        z = torch.as_tensor(grid @ plane, dtype=torch.float32, device=self.x.device)  # (k², d)
        label = None if not model.config.n_classes else torch.zeros(len(z), dtype=torch.long, device=z.device)
        images = model.decode_mean(z, label).cpu().numpy()  # (k², C, H, W)
        c, h, w = images.shape[1:]
        return pictures.to_uint8(pictures.tile(images.reshape(LATTICE, LATTICE, c, h, w)))

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What was recorded so far, as tensors and JSON (kept with a run's training state, `resume.py`)."""
        tensors = {}
        if self.epochs:
            tensors = {"mu": np.stack(self.mu), "var": np.stack(self.var), "kl": np.stack(self.kl)}  # (F, P, d) …
            if self.lattices:
                tensors["lattices"] = np.stack(self.lattices)  # (F, h, w, C)
        if self._plane is not None:
            tensors["plane"] = self._plane
        meta = {"epochs": self.epochs, "au": self.au, "mi": self.mi, "seconds": self.seconds, "trained": self.trained}
        return {f"replay.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Continue from `state()`'s output."""
        arrays = {k.removeprefix("replay."): v.numpy() for k, v in tensors.items() if k.startswith("replay.")}
        self.epochs, self.au, self.mi = list(meta["epochs"]), list(meta["au"]), list(meta["mi"])
        self.seconds, self.trained = list(meta["seconds"]), float(meta["trained"])
        self.mu, self.var, self.kl = ([] if not self.epochs else list(arrays[k]) for k in ("mu", "var", "kl"))
        self.lattices = list(arrays["lattices"]) if "lattices" in arrays else []
        self._plane = arrays.get("plane")

    def finish(self) -> Replay | None:
        """The replay (None before any epoch). With d > 2 the means and covariances of every epoch are projected on
        the principal axes of the last epoch's means: Σ_map = Wᵀ diag(σ²) W."""
        if not self.epochs:
            return None
        mus, variances = np.stack(self.mu), np.stack(self.var)  # (E, P, d)
        d = mus.shape[2]
        if d == 2:
            w, centre, axes = np.eye(2), np.zeros(2), ("z₀", "z₁")
        else:
            centre = mus[-1].mean(0)
            _, _, vt = np.linalg.svd(mus[-1] - centre, full_matrices=False)
            w = vt[:2].T if d >= 2 else np.eye(1, 2)  # (d, 2)
            w = w * np.sign(w[np.abs(w).argmax(axis=0), [0, 1]])  # largest loading positive
            axes = ("PC1 of the last epoch's means", "PC2")
        means = (mus - centre) @ w  # (E, P, 2)
        cov = np.einsum("dk,epd,dl->epkl", w, variances, w)  # (E, P, 2, 2)
        return Replay(epochs=np.array(self.epochs), probe_ids=self.probe_ids,
                      labels=None if self.y is None else self.y.cpu().numpy(),
                      means=means.astype(np.float32),
                      cov=np.stack([cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]], -1).astype(np.float32),
                      kl_per_dim=np.stack(self.kl).astype(np.float32), active_units=np.array(self.au),
                      mutual_info=np.array(self.mi, dtype=np.float64),
                      lattice=np.stack(self.lattices) if self.lattices else None, axes=axes,
                      record_seconds=list(self.seconds),
                      class_names=None if self.class_names is None else [str(c) for c in self.class_names])


# ---------------------------------------------------------------- the file

def path_for(checkpoint_path: str | os.PathLike) -> Path:
    """The replay beside a checkpoint: `NAME.safetensors` → `NAME.replay` (not a `.safetensors` name, so model
    listings never mistake it for a model)."""
    p = Path(checkpoint_path)
    return p.with_name(p.name.removesuffix(".safetensors") + SUFFIX)


def to_bytes(replay: Replay) -> bytes:
    arrays = {"epochs": replay.epochs.astype(np.int64), "probe_ids": replay.probe_ids.astype(np.int64),
              "means": replay.means, "cov": replay.cov, "kl_per_dim": replay.kl_per_dim,
              "active_units": replay.active_units.astype(np.int64), "mutual_info": replay.mutual_info}
    if replay.labels is not None:
        arrays["labels"] = replay.labels.astype(np.int64)
    if replay.lattice is not None:
        arrays["lattice"] = replay.lattice
    meta = {"format_version": FORMAT_VERSION, "axes": list(replay.axes), "record_seconds": replay.record_seconds,
            "class_names": replay.class_names}
    return np_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"replay": json.dumps(meta)})


def from_bytes(blob: bytes, name: str = "replay") -> Replay:
    """Parse and check a replay file's bytes; ReplayError when it is not a consistent replay."""
    if len(blob) > MAX_REPLAY_BYTES:
        raise ReplayError(f"{name} is larger than {MAX_REPLAY_BYTES >> 20} MiB")
    try:
        arrays = np_load(blob)
        n = min(int.from_bytes(blob[:8], "little"), len(blob))  # the safetensors header's length
        meta = json.loads(json.loads(blob[8:8 + n])["__metadata__"]["replay"])
    except Exception as err:  # safetensors raises its own error type for corrupt data
        raise ReplayError(f"{name} is not a replay file ({err})") from None
    try:
        e = len(arrays["epochs"])
        p = len(arrays["probe_ids"])
        ok = (arrays["means"].shape == (e, p, 2) and arrays["cov"].shape == (e, p, 3)
              and arrays["kl_per_dim"].shape[0] == e and arrays["active_units"].shape == (e,)
              and arrays["mutual_info"].shape == (e,)
              and ("labels" not in arrays or arrays["labels"].shape == (p,))
              and ("lattice" not in arrays or (arrays["lattice"].shape[0] == e and arrays["lattice"].dtype == np.uint8)))
    except KeyError as err:
        raise ReplayError(f"{name} lacks {err}") from None
    if not ok or meta.get("format_version") != FORMAT_VERSION:
        raise ReplayError(f"{name}: the arrays do not fit together, or the format is unknown")
    return Replay(epochs=arrays["epochs"], probe_ids=arrays["probe_ids"], labels=arrays.get("labels"),
                  means=arrays["means"], cov=arrays["cov"], kl_per_dim=arrays["kl_per_dim"],
                  active_units=arrays["active_units"], mutual_info=arrays["mutual_info"],
                  lattice=arrays.get("lattice"), axes=tuple(meta.get("axes", ("x", "y"))),
                  record_seconds=list(meta.get("record_seconds", [])), class_names=meta.get("class_names"))


def save(path: str | os.PathLike, replay: Replay) -> Path:
    return atomic_write(Path(path), to_bytes(replay), overwrite=True)


def load(path: str | os.PathLike) -> Replay:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise ReplayError(f"cannot open {path.name}: {err.strerror}") from None
    return from_bytes(blob, path.name)
