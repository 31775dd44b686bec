"""Resuming an interrupted run: the whole training state after an epoch, in one safetensors file.

After every epoch `fit` hands over a `TrainState`: the weights, the optimisers' moments and step counts, the random
generator, the soft KL target's multiplier, aggressive training's phase and the history so far. A run writes it
atomically beside its record (`runs/<id>/resume.safetensors`, with the replay recorded so far) and deletes it once
the run has kept its model. Started again from it, `fit` goes on at the next epoch and, with the same seed, gives
the history an uninterrupted run gives. Tensors go into safetensors, everything else into its JSON header: reading
the file back unpickles nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .files import atomic_write

NAME = "resume.safetensors"
FORMAT_VERSION = 1
_META = "vae_resume"


class ResumeError(ValueError):
    """There is no usable training state to resume from."""


@dataclass
class TrainState:
    """Everything `fit` needs to continue after epoch `epoch` (1-based: the epochs done) as if never stopped."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizers: list[dict]  # torch optimizer state_dicts, in `fit`'s order
    generator: torch.Tensor  # the private generator's state (uint8)
    soft: float = 1.0  # the soft KL target's multiplier (`objectives.TrainingObjective.soft`)
    aggressive: dict | None = None  # aggressive encoder training's phase: active, best_mi, inner_steps
    history: list[dict] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the run's own tensors (the replay so far)
    extra_meta: dict = field(default_factory=dict)


def to_bytes(state: TrainState, spec: dict) -> bytes:
    """The state (and the run's spec, which a resume must match) as safetensors bytes."""
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    groups = []
    for i, opt in enumerate(state.optimizers):
        for pid, slots in opt["state"].items():
            for name, value in slots.items():
                tensors[f"opt{i}.{pid}.{name}"] = torch.as_tensor(value)
        groups.append(opt["param_groups"])
    tensors["generator"] = state.generator
    tensors.update({f"extra.{k}": v for k, v in state.extra.items()})
    meta = {"format_version": FORMAT_VERSION, "spec": spec, "epoch": state.epoch, "soft": state.soft,
            "aggressive": state.aggressive, "history": state.history, "param_groups": groups,
            "extra_meta": state.extra_meta}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return st_save(tensors, metadata={_META: json.dumps(meta, allow_nan=False)})


def from_bytes(blob: bytes, spec: dict, name: str = NAME) -> TrainState:
    """Parse a state written by `to_bytes` for the run `spec` (ResumeError if it is another run's or unreadable)."""
    try:
        n = int.from_bytes(blob[:8], "little")
        meta = json.loads(json.loads(blob[8:8 + n])["__metadata__"][_META])
        tensors = st_load(blob)
    except (ValueError, KeyError, TypeError, SafetensorError) as err:
        raise ResumeError(f"{name} is not a readable training state ({err})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ResumeError(f"{name} was written by another version of this app")
    if meta.get("spec") != json.loads(json.dumps(spec)):
        raise ResumeError(f"{name} belongs to a run with other settings")
    optimizers = []
    for i, groups in enumerate(meta["param_groups"]):
        state: dict[int, dict] = {}
        prefix = f"opt{i}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, slot = key[len(prefix):].split(".", 1)
                state.setdefault(int(pid), {})[slot] = value
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]  # JSON made it a list
        optimizers.append({"state": state, "param_groups": groups})
    return TrainState(
        epoch=int(meta["epoch"]), model={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        optimizers=optimizers, generator=tensors["generator"], soft=float(meta["soft"]),
        aggressive=meta["aggressive"], history=list(meta["history"]),
        extra={k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}, extra_meta=meta["extra_meta"])


def save(folder: str | os.PathLike, state: TrainState, spec: dict) -> Path:
    """Write the state into a run's folder atomically (a kill mid-write leaves the previous epoch's state)."""
    return atomic_write(Path(folder) / NAME, to_bytes(state, spec))


def load(folder: str | os.PathLike, spec: dict) -> TrainState:
    path = Path(folder) / NAME
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ResumeError("no training state was saved for this run (it ended before its first epoch, or "
                          "it already kept its model)") from None
    except OSError as err:
        raise ResumeError(f"cannot read {path.name}: {err.strerror}") from None
    return from_bytes(blob, spec, path.name)


def discard(folder: str | os.PathLike) -> None:
    """Remove a run's training state (once its model is kept, or when it cannot be resumed)."""
    try:
        (Path(folder) / NAME).unlink()
    except FileNotFoundError:
        pass
