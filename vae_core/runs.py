"""The run service: the one way anything trains.

A run is (data, model config, objective, train config) → a recorded run: status, per-epoch history, timings,
the checkpoint, and an end-of-run evaluation when asked for. The CLI's `train` and `sweep`, the app's Train
page, the collapse lab's sweeps and the held-out-class experiment all submit a `RunSpec` here; the run executes
on the service's executor (a bounded pool of worker threads in this process), never in a page's script, so
leaving a page, reloading it or closing the tab does not stop it. Pages and the CLI only observe a `Run`: its
status, progress, elapsed time and time left (from the measured epoch times), live history and a small decoder
preview after every epoch; `stop` ends it keeping the weights of the last complete epoch.

Records live in the workspace (`$VAE_HOME/runs/<id>/run.json`, the checkpoint beside it unless the submitter
chose a path), so a finished run can be reopened by any session, or after a restart, by its id. Only the
`keep` most recent runs are kept; older run folders are removed (models saved under a name are not runs and
are never removed). This module never imports streamlit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import anomaly
from . import checkpoint as ckpt_io
from . import store
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, check_int
from .decoding import decode_lattice, lattice_axis
from .device import default_device
from .executors import LocalExecutor
from .files import write_json
from .jobs import CANCELLED, DONE, FAILED, FINAL, QUEUED, Cancelled, Job
from .metrics import collapse_metrics
from .model import VAE, init_weights
from .train import StepProgress, fit

log = logging.getLogger(__name__)

KEEP_RUNS = 50  # finished runs kept in the workspace (and in memory) by default
STOPPED, DIVERGED, INTERRUPTED = "stopped", "diverged", "interrupted"
RECORD = "run.json"
PREVIEW_SIDE = 8  # the decoder preview after every epoch: an 8×8 lattice over z0, z1


@dataclass(frozen=True)
class RunSpec:
    """What to train and how to judge it at the end. Frozen and hashable: it keys caches and estimates."""

    data: store.DataRef
    model: ModelConfig
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lab_metrics: bool = False  # at the end: rate, distortion, KL per dimension, active units, I(x;z)
    iwae_k: int = 0  # … and the IWAE NLL with this many importance samples (0: none)

    def __post_init__(self) -> None:
        check_int("iwae_k", self.iwae_k, 0, 100_000)
        if self.data.exclude_class is not None and self.model.n_classes:
            raise ConfigError("the held-out-class experiment trains an unconditional model")

    def to_dict(self) -> dict:
        return {"data": self.data.to_dict(), "model": self.model.to_dict(), "objective": self.objective.to_dict(),
                "train": self.train.to_dict(), "lab_metrics": self.lab_metrics, "iwae_k": self.iwae_k}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        try:
            return cls(data=store.DataRef.from_dict(d["data"]), model=ModelConfig.from_dict(d["model"]),
                       objective=ObjectiveConfig.from_dict(d["objective"]), train=TrainConfig.from_dict(d["train"]),
                       lab_metrics=bool(d.get("lab_metrics", False)), iwae_k=int(d.get("iwae_k", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"not a run specification: {err}") from None


def build_model(cfg: ModelConfig, seed: int) -> VAE:
    """The VAE with the initial weights of `seed` (`model.init_weights`): the same in any thread."""
    return init_weights(VAE(cfg), seed)


class Run(Job):
    """One recorded run. Besides a job's fields: the spec, the live history (a record per epoch), the latest
    decoder preview, the end-of-run evaluation, and where its checkpoint was saved (None: nothing to keep)."""

    def __init__(self, spec: RunSpec, *, label: str = "", owner: str | None = None, group: str | None = None,
                 out: Path | None = None, overwrite: bool = False, keep_partial: bool = True):
        super().__init__(label or default_label(spec), kind="run", owner=owner)
        self.spec, self.group = spec, group
        self.out, self.overwrite, self.keep_partial = out, overwrite, keep_partial
        self.history: list[dict] = []
        self.preview: np.ndarray | None = None  # (8, 8, C, H, W) decoded after the last epoch
        self.evaluation: dict | None = None  # JSON-able summary, stored in the record and the checkpoint
        self.stop_reason: str | None = None
        self.saved: Path | None = None
        self.outcome = DONE  # how a run that returned ended: done, stopped or diverged
        self._on_final: list[Callable[["Run"], None]] = []

    def stop(self) -> None:
        """End the run at its next step, keeping the weights of the last complete epoch (what its history reports)."""
        self.cancel()

    @property
    def reason(self) -> str | None:
        """Why it ended other than normally, in words (None: it finished, or is still going)."""
        if self.status == CANCELLED:
            return "cancelled before it started"
        return self.error or self.stop_reason

    def _finish(self, status, result=None, error=None) -> None:
        super()._finish(self.outcome if status == DONE else status, result, error)

    def _finalize(self) -> None:
        for hook in self._on_final:
            try:
                hook(self)
            except Exception:  # noqa: BLE001 — a hook (saving a manifest) must not hide the run's own result
                log.exception("a run hook failed for %s", self.id)

    def record(self) -> dict:
        """The run as JSON (run.json)."""
        return {"id": self.id, "label": self.label, "owner": self.owner, "group": self.group, "status": self.status,
                "pid": os.getpid(),
                "created": self.created, "started": self.started, "finished": self.finished,
                "spec": self.spec.to_dict(), "history": self.history, "evaluation": self.evaluation,
                "reason": self.reason, "checkpoint": None if self.saved is None else str(self.saved)}

    @classmethod
    def from_record(cls, rec: dict) -> "Run":
        run = cls(RunSpec.from_dict(rec["spec"]), label=str(rec.get("label", "")), owner=rec.get("owner"),
                  group=rec.get("group"))
        run.id = str(rec["id"])
        run.created, run.started, run.finished = rec.get("created", 0.0), rec.get("started"), rec.get("finished")
        run.history = list(rec.get("history") or [])
        run.evaluation = rec.get("evaluation")
        status = rec.get("status", FAILED)
        if status not in FINAL:  # it was queued or running when the server stopped
            status, run.stop_reason = INTERRUPTED, "the server stopped before this run finished"
        elif status == FAILED:
            run.error = rec.get("reason")
        else:
            run.stop_reason = rec.get("reason")
        if rec.get("checkpoint") and Path(rec["checkpoint"]).is_file():
            run.saved = Path(rec["checkpoint"])
        run.status = status
        run._done.set()
        return run


def default_label(spec: RunSpec) -> str:
    name = Path(spec.data.name).stem if spec.data.hash else spec.data.name
    return f"{name}-{spec.model.latent_dim}d"


def _held_out_summary(ev: dict) -> dict:
    """The JSON-able part of a held-out evaluation (the curves and scores stay in memory)."""
    return {k: ev[k] for k in ("held_out", "n_out", "n_train", "test_elbo", "auroc")}


def execute(run: Run, workspace: store.Workspace, device: torch.device | None = None) -> dict | None:
    """Train and evaluate `run.spec` (seed → build → fit → evaluate → checkpoint), updating `run` as it goes.
    Returns the full end-of-run evaluation (None without one). Raises on bad data or settings."""
    spec = run.spec
    device = device or default_device()
    run.update(0.0, "loading the data")
    data = store.load(spec.data, device, workspace)
    if tuple(data.image_shape) != tuple(spec.model.image_shape):
        raise ConfigError(f"the model expects images of {spec.model.image_shape}; {data.name} has {data.image_shape}")
    if spec.model.n_classes and data.y_train is None:
        raise ConfigError(f"a conditional model needs labels, and {data.name} has none")
    model = build_model(spec.model, spec.train.seed)
    ends_with_evaluation = spec.lab_metrics or spec.data.exclude_class is not None
    train_share = 0.9 if ends_with_evaluation else 1.0
    axis = lattice_axis(PREVIEW_SIDE, "quantile")

    def on_step(p: StepProgress) -> None:
        if run.history:  # measured: training plus test evaluation, per epoch so far
            per_epoch = statistics.fmean(r["seconds"] + r["eval_seconds"] for r in run.history)
            left = (p.epochs - p.epoch - (p.step + 1) / p.steps) * per_epoch
        else:  # first epoch: the step rate
            left = p.elapsed / (p.step + 1) * (p.epochs * p.steps - p.epoch * p.steps - p.step - 1)
        run.update(train_share * p.fraction, f"epoch {p.epoch + 1} of {p.epochs} · step {p.step + 1} of {p.steps} · "
                   f"loss {float(p.loss.total.detach()):.2f}", eta=left)

    def on_epoch(record: dict, m: VAE) -> None:
        run.history = [*run.history, record]  # a new list: observers never see one half-appended
        if not spec.model.autoregressive:  # decoding an autoregressive model pixel by pixel is too slow here
            run.preview = decode_lattice(m, axis, axis, label=0 if spec.model.n_classes else None)

    result = fit(model, data, spec.objective, spec.train, on_step=on_step, on_epoch=on_epoch,
                 should_stop=lambda: run.cancel_requested)
    run.history = list(result.history)
    run.stop_reason = result.stop_reason
    run.outcome = DIVERGED if result.diverged else STOPPED if result.stop_reason else DONE
    evaluation = None
    if result.history and run.outcome == DONE and ends_with_evaluation:
        evaluation = _evaluate(run, model.eval(), data, train_share)
    if result.history and (run.outcome == DONE or run.keep_partial):
        extra = {"run": {"id": run.id, "spec": spec.to_dict()}}
        if run.evaluation is not None:
            extra["evaluation"] = run.evaluation
        if run.stop_reason:
            extra["stop_reason"] = run.stop_reason
        ckpt = ckpt_io.Checkpoint(model=model.eval(), objective=spec.objective, train=spec.train,
                                  dataset=data.info(), history=run.history, extra=extra)
        run.saved = ckpt_io.save(run.out, ckpt, overwrite=run.overwrite)
    return evaluation


def _evaluate(run: Run, model: VAE, data, start: float) -> dict | None:
    """The end-of-run evaluation, with its own progress; Stop during it keeps the trained model without one."""
    spec = run.spec
    try:
        if spec.data.exclude_class is not None:
            run.report(start, f"scoring {len(data.x_test):,} test images")
            full = anomaly.held_out_evaluation(model, data, spec.data.exclude_class)
            run.evaluation = _held_out_summary(full)
            return full
        run.report(start, f"evaluating on {len(data.x_test):,} test images" +
                   (f" (IWAE NLL, k = {spec.iwae_k})" if spec.iwae_k else ""))
        y = data.y_test if spec.model.n_classes else None
        run.evaluation = collapse_metrics(model, data.x_test, y, iwae_k=spec.iwae_k,
                                          progress=lambda f: run.report(start + (1 - start) * f))
        return run.evaluation
    except Cancelled:
        run.outcome = STOPPED
        run.stop_reason = "stopped during the end-of-run evaluation; the trained model was kept without it"
        return None


class RunService:
    """Submits runs to an executor, keeps their records (in memory and in the workspace), and answers for them.
    Thread-safe: pages of many sessions and the executor's workers use it at once."""

    def __init__(self, workspace: store.Workspace | None = None, executor=None, *, keep: int = KEEP_RUNS,
                 device: torch.device | None = None):
        self.workspace = workspace or store.Workspace()
        self.executor = executor or LocalExecutor(name="vae-run")
        self.keep = keep
        self.device = device
        self._runs: OrderedDict[str, Run] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        self._load_records()

    # ------------------------------------------------------------ submitting and observing

    def submit(self, spec: RunSpec, *, label: str = "", owner: str | None = None, group: str | None = None,
               out: str | Path | None = None, overwrite: bool = False, keep_partial: bool = True,
               on_finish: Callable[[Run], None] | None = None) -> Run:
        """Queue a run. Its checkpoint goes to `out`, else to its folder in the workspace; without `keep_partial`
        a stopped run keeps no checkpoint (a sweep caches only complete runs)."""
        run = Run(spec, label=label, owner=owner, group=group, overwrite=overwrite, keep_partial=keep_partial)
        run.out = Path(out) if out is not None else self.workspace.runs_dir / run.id / "model.safetensors"
        run._on_final.append(self._finished)
        if on_finish is not None:
            run._on_final.append(on_finish)
        self._persist(run)
        with self._lock:
            self._runs[run.id] = run
        self.executor.submit(run, self._execute)
        return run

    def _execute(self, run: Run):
        self._persist(run)  # now running
        return execute(run, self.workspace, self.device)

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(str(run_id))

    def runs(self, owner: str | None = None, group: str | None = None) -> list[Run]:
        """Runs, newest first, optionally only those of one owner and/or one group (a sweep)."""
        with self._lock:
            runs = list(self._runs.values())[::-1]
        return [r for r in runs if (owner is None or r.owner == owner) and (group is None or r.group == group)]

    def stop(self, run: Run) -> None:
        """Stop a running run (keeping its last complete epoch), or take a queued one out of the queue."""
        if run.status == QUEUED:
            self.executor.cancel(run)
        else:
            run.stop()

    def position(self, run: Run) -> int | None:
        """A queued run's place in the queue (1 = next)."""
        return self.executor.position(run)

    def load(self) -> tuple[int, int]:
        """(running, queued) runs."""
        return self.executor.load()

    def checkpoint(self, run: Run, device=None) -> ckpt_io.Checkpoint:
        if run.saved is None:
            raise ckpt_io.CheckpointError(f"run {run.label} kept no model ({run.reason or run.status})")
        return ckpt_io.load(run.saved, device=device or self.device or default_device())

    # ------------------------------------------------------------ records

    def _record_path(self, run: Run) -> Path:
        return self.workspace.runs_dir / run.id / RECORD

    def _persist(self, run: Run) -> None:
        try:
            write_json(self._record_path(run), run.record())
        except (OSError, ValueError) as err:  # a full disk must not kill the run itself
            log.warning("could not write the record of run %s: %s", run.id, err)

    def _finished(self, run: Run) -> None:
        self._persist(run)
        self._prune()

    def _prune(self) -> None:
        """Keep the `keep` most recent finished runs; remove older ones from memory and their folders from disk."""
        with self._lock:
            finished = [r for r in self._runs.values() if r.done]
            for old in finished[: max(0, len(finished) - self.keep)]:
                del self._runs[old.id]
                shutil.rmtree(self.workspace.runs_dir / old.id, ignore_errors=True)

    def _load_records(self) -> None:
        """Runs recorded by earlier processes on this workspace (a run that was still going is `interrupted`)."""
        folder = self.workspace.runs_dir
        if not folder.is_dir():
            return
        for path in sorted(folder.glob(f"*/{RECORD}")):  # ids sort by creation time
            try:
                rec = json.loads(path.read_text())
                if rec.get("status") not in FINAL and _alive(rec.get("pid")):
                    continue  # another live process (the app server, a CLI run) owns it
                run = Run.from_record(rec)
            except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
                log.warning("skipping an unreadable run record %s: %s", path, err)
                continue
            if run.status == INTERRUPTED:
                self._persist(run)
            self._runs[run.id] = run
        self._prune()


def _alive(pid) -> bool:
    """Whether process `pid` still runs on this machine (a run it recorded as running may really be running)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_SERVICES: dict[Path, RunService] = {}
_SERVICES_LOCK = threading.Lock()


def default_service() -> RunService:
    """The process's run service for the current workspace (`$VAE_HOME`), made on first use."""
    root = store.home().resolve()
    with _SERVICES_LOCK:
        service = _SERVICES.get(root)
        if service is None:
            service = _SERVICES[root] = RunService(store.Workspace(root))
        return service

