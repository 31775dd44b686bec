"""The run service: the one way anything trains.

A run is (data, model config, objective, train config) → a recorded run: status, per-epoch history, timings,
the checkpoint, and an end-of-run evaluation when asked for. The CLI's `train` and `sweep`, the app's Train
page, the collapse lab's sweeps and the held-out-class experiment all submit a `RunSpec` here; the run executes
on the service's executor (`executors`: a bounded queue in this process, running `execute` in its own thread,
in worker processes or as Ray tasks), never in a page's script, so leaving a page, reloading it or closing the
tab does not stop it. Pages and the CLI only observe a `Run`: its
status, progress, elapsed time and time left (from the measured epoch times), live history and a small decoder
preview after every epoch; `stop` ends it keeping the weights of the last complete epoch.

Records live in the workspace (`$VAE_HOME/runs/<id>/run.json`, the checkpoint beside it unless the submitter
chose a path), so a finished run can be reopened by any session, or after a restart, by its id. Only the
`keep` most recent runs are kept; older run folders are removed (models saved under a name are not runs and
are never removed). This module never imports streamlit.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import shutil
import statistics
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover — Windows: `WorkspacePresence` then never counts as alone
    fcntl = None

import numpy as np

from . import anomaly
from . import checkpoint as ckpt_io
from . import replay
from . import resume as train_state
from . import store
from .calibration import Calibration, Measured, Probe, steady_fit_seconds
from .config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, check_int
from .decoding import decode_lattice, lattice_axis
from .device import default_device
from .executors import LocalExecutor, from_environment
from .files import atomic_write, process_alive, remove_stale_temporaries, write_json
from .jobs import CANCELLED, DONE, FAILED, FINAL, QUEUED, Cancelled, Job
from .metrics import collapse_metrics
from .model import VAE, init_weights
from .train import StepProgress, fit

log = logging.getLogger(__name__)

KEEP_RUNS = 50  # finished runs kept in the workspace (and in memory) by default
ENV_PER_OWNER = "VAE_RUNS_PER_SESSION"  # trainings one user may have queued or running at once (default 1)
STOPPED, DIVERGED, INTERRUPTED = "stopped", "diverged", "interrupted"
RECORD = "run.json"
PREVIEW_SIDE = 8  # the decoder preview after every epoch: an 8×8 lattice over z0, z1
REPORT_EVERY_S = 0.25  # a run's progress (and its loss, which syncs the device) at most this often
PERSIST_EVERY_S = 2.0  # a running run's record (its history so far) is rewritten at most this often


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


class RunLimitError(ValueError):
    """A user already has as many trainings queued or running as the server allows."""


def runs_per_owner() -> int:
    return max(1, int(os.environ.get(ENV_PER_OWNER, 1)))


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
        self.saved_as: str | None = None  # the name its model was saved under in the workspace's models
        self.outcome = DONE  # how a run that returned ended: done, stopped or diverged
        self.limited = False  # counts towards its owner's limit of trainings at once
        self.resuming = False  # continues from the training state its folder holds (`resume.py`)
        self.probe: Probe | None = None  # the probe's estimate it was submitted with
        self.measured: Measured | None = None  # what it took, once done
        self.first_in_process = False  # the first run its process executed: a start-up not to learn from
        self.predicted_wait: float | None = None  # seconds until it starts, as the queue said when it was queued
        self.persisted = -PERSIST_EVERY_S  # when its record was last written while it ran (`time.monotonic`)
        self._on_final: list[Callable[["Run"], None]] = []
        self._on_epoch: list[Callable[["Run"], None]] = []

    def stop(self) -> None:
        """End the run at its next step, keeping the weights of the last complete epoch (what its history reports)."""
        self.cancel()

    def epoch(self, record: dict, preview: np.ndarray | None) -> None:
        """A finished epoch, reported by `execute` (here, in a worker process, or on a Ray worker)."""
        self.history = [*self.history, record]  # a new list: observers never see one half-appended
        if preview is not None:
            self.preview = preview
        for hook in self._on_epoch:
            hook(self)

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
                "reason": self.reason, "checkpoint": None if self.saved is None else str(self.saved),
                "out": None if self.out is None else str(self.out), "keep_partial": self.keep_partial,
                "saved_as": self.saved_as, "predicted_wait": self.predicted_wait}

    @classmethod
    def from_record(cls, rec: dict) -> "Run":
        run = cls(RunSpec.from_dict(rec["spec"]), label=str(rec.get("label", "")), owner=rec.get("owner"),
                  group=rec.get("group"), keep_partial=bool(rec.get("keep_partial", True)))
        run.id = str(rec["id"])
        run.created, run.started, run.finished = rec.get("created", 0.0), rec.get("started"), rec.get("finished")
        run.history = list(rec.get("history") or [])
        run.evaluation = rec.get("evaluation")
        run.saved_as = rec.get("saved_as") if isinstance(rec.get("saved_as"), str) else None
        status = rec.get("status", FAILED)
        if status not in FINAL:  # it was queued or running when the server stopped
            status, run.stop_reason = INTERRUPTED, "the server stopped before this run finished"
        elif status == FAILED:
            run.error = rec.get("reason")
        else:
            run.stop_reason = rec.get("reason")
        if rec.get("checkpoint") and Path(rec["checkpoint"]).is_file():
            run.saved = Path(rec["checkpoint"])
        run.out = Path(rec["out"]) if rec.get("out") else run.saved
        run.status = status
        run._done.set()
        return run


def default_label(spec: RunSpec) -> str:
    name = Path(spec.data.name).stem if spec.data.hash else spec.data.name
    return f"{name}-{spec.model.latent_dim}d"


def _held_out_summary(ev: dict) -> dict:
    """The JSON-able part of a held-out evaluation (the curves and scores stay in memory)."""
    return {k: ev[k] for k in ("held_out", "n_out", "n_train", "test_elbo", "auroc")}


class Reporter(Protocol):
    """What `execute` reports to, and asks, as it goes: a `Run` when it executes in the run's own thread, or a relay
    (`executors.Relay`) that forwards to the `Run` from a worker process or a Ray worker."""

    def update(self, fraction: float, message: str | None = None, eta: float | None = None) -> None: ...

    def report(self, fraction: float, message: str | None = None) -> None: ...

    def epoch(self, record: dict, preview: np.ndarray | None) -> None: ...

    @property
    def cancel_requested(self) -> bool: ...


@dataclass
class Outcome:
    """What `execute` hands back: how training ended, its history, the end-of-run evaluation (a JSON summary and
    the full result, e.g. ROC curves), and the trained model as checkpoint bytes (None: no epoch completed)."""

    status: str  # done | stopped | diverged
    history: list[dict]
    stop_reason: str | None = None
    evaluation: dict | None = None
    result: dict | None = None
    checkpoint: bytes | None = None
    replay: bytes | None = None  # the training replay (`replay.py`), saved beside the checkpoint
    fit_seconds: float = 0.0  # how long its epochs took at their steady pace (`calibration.steady_fit_seconds`),
    end_seconds: float = 0.0  # and its end-of-run evaluation
    first_in_process: bool = False  # the first run this process executed (its start-up included the process's)


_EXECUTED = itertools.count()  # runs `execute` has begun in this process


def execute(spec_dict: dict, run_id: str, reporter: Reporter, *, workspace_root: str | None = None,
            arrays: tuple | None = None, resuming: bool = False) -> Outcome:
    """Train and evaluate one run (seed → build → fit → evaluate → checkpoint bytes), reporting as it goes.
    Plain values in, plain values out, so it executes anywhere: in the run's thread, a worker process or a Ray
    worker. The data comes from the workspace at `workspace_root`, or (`arrays`: (ArrayData, file name), shipped
    by a remote executor) from memory. After every epoch the training state goes to the run's folder in that
    workspace (`resume.py`); `resuming` continues from it. Raises on bad data or settings."""
    first_in_process = next(_EXECUTED) == 0
    spec = RunSpec.from_dict(spec_dict)
    folder = store.Workspace(workspace_root).runs_dir / run_id if workspace_root else None
    start = train_state.load(folder, spec_dict) if resuming and folder is not None else None
    device = default_device()
    reporter.update(0.0, "loading the data")
    data = store.load(spec.data, device, store.Workspace(workspace_root) if workspace_root else None, arrays=arrays)
    if tuple(data.image_shape) != tuple(spec.model.image_shape):
        raise ConfigError(f"the model expects images of {spec.model.image_shape}; {data.name} has {data.image_shape}")
    if spec.model.n_classes and data.y_train is None:
        raise ConfigError(f"a conditional model needs labels, and {data.name} has none")
    model = build_model(spec.model, spec.train.seed)
    ends_with_evaluation = spec.lab_metrics or spec.data.exclude_class is not None
    train_share = 0.9 if ends_with_evaluation else 1.0
    axis = lattice_axis(PREVIEW_SIDE, "quantile")
    epoch_seconds: list[float] = []

    reported = [-REPORT_EVERY_S]  # when the last step was reported (training's own clock)

    def on_step(p: StepProgress) -> None:
        # Reading the loss as a number waits for the device: on a GPU that would stall every step, so progress is
        # reported a few times a second (and at the end of each epoch), and the loss read only then.
        if p.elapsed - reported[0] < REPORT_EVERY_S and p.step + 1 < p.steps:
            return
        reported[0] = p.elapsed
        if epoch_seconds:  # measured: training plus test evaluation, per epoch so far (the median: a first epoch
            left = (p.epochs - p.epoch - (p.step + 1) / p.steps) * statistics.median(epoch_seconds)  # is often slow)
        else:  # first epoch: the step rate
            left = p.elapsed / (p.step + 1) * (p.epochs * p.steps - p.epoch * p.steps - p.step - 1)
        reporter.update(train_share * p.fraction, f"epoch {p.epoch + 1} of {p.epochs} · step {p.step + 1} of "
                        f"{p.steps} · loss {float(p.loss.total.detach()):.2f}", eta=left)

    recorder = replay.Recorder(data.x_test, data.y_test, y_condition=bool(spec.model.n_classes),
                               class_names=data.class_names, epochs=spec.train.epochs)
    if start is not None:
        recorder.restore(start.extra, start.extra_meta)

    def on_epoch(record: dict, m: VAE) -> None:
        record["replay_seconds"] = recorder.record(record["epoch"], m, record["seconds"] + record["eval_seconds"])
        epoch_seconds.append(record["seconds"] + record["eval_seconds"] + record["replay_seconds"])
        preview = None
        if not spec.model.autoregressive:  # decoding an autoregressive model pixel by pixel is too slow here
            preview = decode_lattice(m, axis, axis, label=0 if spec.model.n_classes else None)
        reporter.epoch(record, preview)

    def on_state(state: train_state.TrainState) -> None:
        state.extra, state.extra_meta = recorder.state()
        try:
            train_state.save(folder, state, spec_dict)
        except OSError as err:  # a full disk costs the chance to resume, not the run
            log.warning("could not save the training state of run %s: %s", run_id, err)

    fit_started = time.perf_counter()
    fit_result = fit(model, data, spec.objective, spec.train, on_step=on_step, on_epoch=on_epoch,
                     should_stop=lambda: reporter.cancel_requested, start=start,
                     on_state=on_state if folder is not None else None)
    outcome = Outcome(status=DIVERGED if fit_result.diverged else STOPPED if fit_result.stop_reason else DONE,
                      history=list(fit_result.history), stop_reason=fit_result.stop_reason,
                      fit_seconds=steady_fit_seconds(time.perf_counter() - fit_started, epoch_seconds),
                      first_in_process=first_in_process)
    if not outcome.history:
        return outcome
    if outcome.status == DONE and ends_with_evaluation:
        end_started = time.perf_counter()
        _evaluate(outcome, spec, reporter, model.eval(), data, train_share)
        outcome.end_seconds = time.perf_counter() - end_started
    extra = {"run": {"id": run_id, "spec": spec.to_dict()}}
    if outcome.evaluation is not None:
        extra["evaluation"] = outcome.evaluation
    if outcome.stop_reason:
        extra["stop_reason"] = outcome.stop_reason
    recorded = recorder.finish()
    outcome.replay = None if recorded is None else replay.to_bytes(recorded)
    outcome.checkpoint = ckpt_io.to_bytes(ckpt_io.Checkpoint(
        model=model.eval(), objective=spec.objective, train=spec.train, dataset=data.info(), history=outcome.history,
        extra=extra))
    return outcome


def _evaluate(outcome: Outcome, spec: RunSpec, reporter: Reporter, model: VAE, data, start: float) -> None:
    """The end-of-run evaluation, with its own progress; Stop during it keeps the trained model without one."""
    try:
        if spec.data.exclude_class is not None:
            reporter.report(start, f"scoring {len(data.x_test):,} test images")
            outcome.result = anomaly.held_out_evaluation(model, data, spec.data.exclude_class)
            outcome.evaluation = _held_out_summary(outcome.result)
            return
        reporter.report(start, f"evaluating on {len(data.x_test):,} test images" +
                        (f" (IWAE NLL, k = {spec.iwae_k})" if spec.iwae_k else ""))
        y = data.y_test if spec.model.n_classes else None
        outcome.evaluation = outcome.result = collapse_metrics(
            model, data.x_test, y, iwae_k=spec.iwae_k, progress=lambda f: reporter.report(start + (1 - start) * f))
    except Cancelled:
        outcome.status = STOPPED
        outcome.stop_reason = "stopped during the end-of-run evaluation; the trained model was kept without it"


class RunService:
    """Submits runs to an executor, keeps their records (in memory and in the workspace), and answers for them.
    Thread-safe: pages of many sessions and the executor's workers use it at once."""

    def __init__(self, workspace: store.Workspace | None = None, executor=None, *, keep: int = KEEP_RUNS):
        self.workspace = workspace or store.Workspace()
        self.executor = executor or LocalExecutor(name="vae-run")
        self.keep = keep
        self._runs: OrderedDict[str, Run] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        self._persisting = threading.Lock()
        self._created: set[str] = set()  # ids of the runs this service submitted (it may remove their folders)
        self.calibration = Calibration()  # what finished runs took against their probes
        self._presence = WorkspacePresence(self.workspace.runs_dir)
        for folder in (self.workspace.models_dir, self.workspace.datasets_dir, self.workspace.sweeps_dir):
            remove_stale_temporaries(folder)  # left by a process killed while saving
        self._load_records()

    # ------------------------------------------------------------ submitting and observing

    def submit(self, spec: RunSpec, *, label: str = "", owner: str | None = None, group: str | None = None,
               out: str | Path | None = None, overwrite: bool = False, keep_partial: bool = True,
               on_finish: Callable[[Run], None] | None = None, expected_seconds: float | None = None,
               limited: bool = False) -> Run:
        """Queue a run. Its checkpoint goes to `out`, else to its folder in the workspace; without `keep_partial`
        a stopped run keeps no checkpoint (a sweep caches only complete runs). `expected_seconds` (a probe's
        `estimates.Estimate`, or seconds) lets others see when a queue will move. `limited`: refuse (RunLimitError) when `owner` already
        has `$VAE_RUNS_PER_SESSION` limited runs queued or running — a class sharing a server takes turns."""
        if out is not None and not overwrite and Path(out).exists():  # said now, not after the training
            raise ckpt_io.CheckpointExistsError(f"{Path(out).name} already exists; choose another name")
        run = Run(spec, label=label, owner=owner, group=group, overwrite=overwrite, keep_partial=keep_partial)
        run.out = Path(out) if out is not None else self.workspace.runs_dir / run.id / "model.safetensors"
        return self._enqueue(run, expected_seconds, limited, on_finish)

    def resume(self, run_id: str, *, expected_seconds: float | None = None, limited: bool = False) -> Run:
        """Continue an interrupted or stopped run from the training state of its last complete epoch
        (`resume.py`), under the same id, label and owner; it ends as the uninterrupted run would have."""
        old = self.get(run_id)
        if old is None:
            raise train_state.ResumeError(f"there is no run {run_id} in this workspace")
        if old.status not in (INTERRUPTED, STOPPED):
            raise train_state.ResumeError(f"run {old.label} is {old.status}: only an interrupted or stopped run "
                                          "can be resumed")
        state = train_state.load(self.workspace.runs_dir / old.id, old.spec.to_dict())  # a clear error now
        run = Run(old.spec, label=old.label, owner=old.owner, group=old.group, keep_partial=old.keep_partial,
                  overwrite=old.saved is not None and old.saved == old.out)  # replaces its own partial model
        run.id, run.created, run.resuming = old.id, old.created, True
        run.out = old.out or self.workspace.runs_dir / run.id / "model.safetensors"
        run.history = state.history
        return self._enqueue(run, expected_seconds, limited, None)

    def resumable(self, run: Run) -> bool:
        """Whether `resume` can continue `run` (it was interrupted or stopped after saving an epoch's state)."""
        return run.status in (INTERRUPTED, STOPPED) and (self.workspace.runs_dir / run.id / train_state.NAME).is_file()

    def _enqueue(self, run: Run, expected_seconds: float | None, limited: bool,
                 on_finish: Callable[[Run], None] | None) -> Run:
        run.limited = limited
        run.probe = Probe.of(expected_seconds)  # the probe's own figures; the queue uses them as measured here
        run.expected_seconds = None if run.probe is None else self.calibration.expected(run.probe)
        run._on_final.append(self._finished)
        run._on_epoch.append(self._epoch_done)
        if on_finish is not None:
            run._on_final.append(on_finish)
        owner = run.owner
        with self._lock:
            if limited:
                going = [r for r in self._runs.values() if r.owner == owner and r.limited and not r.done]
                if len(going) >= runs_per_owner():
                    raise RunLimitError(f"you already have {len(going)} training(s) queued or running "
                                        f"({going[0].label}); this server allows {runs_per_owner()} at a time per "
                                        "user: wait for it to finish, or stop it")
            self._runs.pop(run.id, None)  # a resumed run replaces its interrupted self, as the newest
            self._runs[run.id] = run
            self._created.add(run.id)
        self.executor.submit(run, self._execute)
        run.predicted_wait = self.expected_start(run)  # what its page says first, kept to check the queue
        self._persist(run)  # (once: when twenty press Train at once, each write waits for the interpreter lock)
        return run

    def _execute(self, run: Run):
        """In one of the executor's threads: run `execute` where the executor runs work, then keep its outcome."""
        self._persist(run)  # now running
        ref = run.spec.data
        arrays = None
        if self.executor.remote and not ref.builtin:  # a remote worker may not see this workspace: ship the data
            arrays = self.executor.share(("dataset", ref.hash), lambda: self.workspace.load_arrays(ref.hash))
        outcome = self.executor.call(execute, (run.spec.to_dict(), run.id), run,
                                     workspace_root=str(self.workspace.root), arrays=arrays, resuming=run.resuming)
        run.history, run.stop_reason, run.evaluation = outcome.history, outcome.stop_reason, outcome.evaluation
        run.measured = Measured(0.0, outcome.fit_seconds, outcome.end_seconds)  # its total once it has ended
        run.first_in_process = outcome.first_in_process
        run.outcome = outcome.status
        if outcome.checkpoint is not None and (outcome.status == DONE or run.keep_partial):
            run.saved = _write_free(run.out, outcome.checkpoint, overwrite=run.overwrite)
            if outcome.replay is not None:
                atomic_write(replay.path_for(run.saved), outcome.replay, overwrite=True)
        if outcome.status != STOPPED:  # done (the model is kept) or diverged: nothing to go on from
            train_state.discard(self.workspace.runs_dir / run.id)
        return outcome.result

    def close(self) -> None:
        """Stop holding the workspace open (its run folders may then be pruned by another process)."""
        self._presence.close()

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

    def expected_start(self, run: Run) -> float | None:
        """Seconds until a queued run starts: the workers free up as the running runs end (their own time left)
        and then take the runs ahead of it in order (their expected times). None when a time is unknown."""
        ahead = []
        for job in self.executor.queued():
            if job is run:
                break
            ahead.append(job)
        else:
            return None if run.status == QUEUED else 0.0
        free = self._workers_free(ahead)
        return None if free is None else min(free)

    def expected_finish(self, seconds: list[float], *, now: bool = True) -> float | None:
        """Seconds until new runs taking `seconds` each, queued now behind every running and waiting run, have all
        ended (on however many workers this server has); with `now` False, on idle workers. None when a time is
        unknown."""
        free = self._workers_free(self.executor.queued()) if now else [0.0] * self.executor.max_workers
        if free is None:
            return None
        ends = [0.0]
        for s in seconds:
            ends.append(heapq.heappop(free) + s)
            heapq.heappush(free, ends[-1])
        return max(ends)

    def _workers_free(self, queued: list) -> list[float] | None:
        """A heap of the seconds until each worker is free, once the running runs and then `queued` (in order, each
        taking the first free worker) have ended."""
        running = [r for r in self.runs() if r.status == "running"]
        free = [0.0] * max(0, self.executor.max_workers - len(running))
        for r in running:
            left = r.eta()
            if left is None and r.expected_seconds is not None:
                left = max(0.0, r.expected_seconds - r.elapsed)
            if left is None:
                return None
            free.append(left)
        heapq.heapify(free)
        for job in queued:
            probe = getattr(job, "probe", None)  # what runs take here now, learnt since the job was queued too
            seconds = self.calibration.expected(probe) if probe is not None else getattr(job, "expected_seconds", None)
            if seconds is None:
                return None
            heapq.heappush(free, heapq.heappop(free) + seconds)
        return free

    def load(self) -> tuple[int, int]:
        """(running, queued) runs."""
        return self.executor.load()

    def checkpoint(self, run: Run, device=None) -> ckpt_io.Checkpoint:
        if run.saved is None:
            raise ckpt_io.CheckpointError(f"run {run.label} kept no model ({run.reason or run.status})")
        return ckpt_io.load(run.saved, device=device or default_device())

    def save(self, run: Run, name: str, *, overwrite: bool = False) -> Path:
        """Keep a run's model for good: saved under `name` in the workspace's models (with its training replay),
        the name remembered in the run's record. Returns the saved file."""
        path = self.workspace.save_model(name, self.checkpoint(run, device="cpu"), overwrite=overwrite,
                                         replay_of=run.saved)
        run.saved_as = path.stem
        self._persist(run)
        return path

    def discard(self, run: Run) -> None:
        """Forget a finished run: its record, and its folder with the model in it (a model saved under a name
        stays)."""
        if not run.done:
            raise ValueError(f"run {run.label} is still {run.status}: stop it first")
        with self._lock:
            self._runs.pop(run.id, None)
        shutil.rmtree(self.workspace.runs_dir / run.id, ignore_errors=True)

    # ------------------------------------------------------------ records

    def _record_path(self, run: Run) -> Path:
        return self.workspace.runs_dir / run.id / RECORD

    def _persist(self, run: Run) -> None:
        try:
            with self._persisting:  # each record as it is when written: a run's later state is never overwritten
                write_json(self._record_path(run), run.record())  # by an earlier one written by another thread
        except (OSError, ValueError) as err:  # a full disk must not kill the run itself
            log.warning("could not write the record of run %s: %s", run.id, err)

    def _epoch_done(self, run: Run) -> None:
        """After each epoch: the record on disk follows the history (at most every PERSIST_EVERY_S), so a killed
        process leaves its epochs listed."""
        now = time.monotonic()
        if now - run.persisted >= PERSIST_EVERY_S:
            run.persisted = now
            self._persist(run)

    def expected_seconds(self, estimate) -> float:
        """Seconds a run with this probe `estimate` (`estimates.Estimate`) should take here, from what the runs
        that finished here took against their probes (`calibration.Calibration`)."""
        return self.calibration.expected(Probe.of(estimate))

    def _finished(self, run: Run) -> None:
        if run.status == DONE and run.probe is not None and run.measured is not None and not run.resuming:
            first = run.first_in_process
            self.calibration.add(run.probe, Measured(run.elapsed, run.measured.fit_seconds, run.measured.end_seconds),
                                 start_up=not first, pace=not (first and len(run.history) < 2))
        self._persist(run)
        self._prune()

    def _prune(self) -> None:
        """Keep the `keep` most recent finished runs; forget older ones, and remove their folders from disk when no
        other process (a server, a CLI run) has this workspace open and may list them or be linked to them; with
        others present only the folders of runs this service submitted itself go."""
        with self._lock:
            finished = [r for r in self._runs.values() if r.done]
            old = finished[: max(0, len(finished) - self.keep)]
            for run in old:
                del self._runs[run.id]
            alone = bool(old) and self._presence.alone()
            for run in old:
                if alone or run.id in self._created:
                    shutil.rmtree(self.workspace.runs_dir / run.id, ignore_errors=True)
            if alone:  # also the folders of runs forgotten earlier, while others had the workspace open
                for folder in self.workspace.runs_dir.iterdir():
                    if folder.is_dir() and folder.name not in self._runs:
                        shutil.rmtree(folder, ignore_errors=True)

    def _load_records(self) -> None:
        """Runs recorded by earlier processes on this workspace (a run that was still going is `interrupted`)."""
        folder = self.workspace.runs_dir
        if not folder.is_dir():
            return
        for path in sorted(folder.glob(f"*/{RECORD}")):  # ids sort by creation time
            remove_stale_temporaries(path.parent)
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


class WorkspacePresence:
    """Which processes have a workspace's runs open: each holds a shared `flock` on `runs/.in-use` for its life, so
    a process can tell whether it is alone (it can take the lock exclusively for a moment). Where folders cannot be
    locked (no `fcntl`), a process never counts as alone."""

    def __init__(self, folder: Path):
        self._fd = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(folder / ".in-use", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        except (AttributeError, OSError) as err:  # AttributeError: no fcntl here
            log.warning("cannot mark the workspace as in use (%s): run folders of other processes are kept", err)
            return
        self._closer = weakref.finalize(self, os.close, self._fd)  # a service that is gone no longer holds it

    def close(self) -> None:
        if self._fd is not None:
            self._closer()
            self._fd = None

    def alone(self) -> bool:
        if self._fd is None:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # converts our shared lock when no one else holds one
            return True
        except OSError:
            return False
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_SH)


def _write_free(path: Path, blob: bytes, *, overwrite: bool) -> Path:
    """Write `blob` to `path`, or, when someone took that name while the run trained, to the first free
    `NAME-2`, `NAME-3`, … beside it (the weights are never thrown away). The path written."""
    for n in range(1, 1000):
        target = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            written = atomic_write(target, blob, overwrite=overwrite and n == 1)
        except FileExistsError:
            continue
        if n > 1:
            log.warning("%s was taken while the run trained; its model was saved as %s", path.name, target.name)
        return written
    raise ckpt_io.CheckpointExistsError(f"{path.name} and its numbered variants are all taken")


def _alive(pid) -> bool:
    """Whether process `pid`, another than this one, still runs here (a run it recorded as running may really be)."""
    return isinstance(pid, int) and pid != os.getpid() and process_alive(pid)


_SERVICES: dict[Path, RunService] = {}
_SERVICES_LOCK = threading.Lock()


def default_service() -> RunService:
    """The process's run service for the current workspace (`$VAE_HOME`), made on first use, on the executor
    `$VAE_EXECUTOR` names (`executors.from_environment`)."""
    root = store.home().resolve()
    with _SERVICES_LOCK:
        service = _SERVICES.get(root)
        if service is None:
            service = _SERVICES[root] = RunService(store.Workspace(root), from_environment())
        return service

