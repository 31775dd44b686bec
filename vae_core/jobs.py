"""Background work that pages observe: a `Job` is one unit (a training run, an IWAE evaluation, a t-SNE map)
with a status, progress, elapsed time, an estimate of the time left, a result and a way to cancel it.

Jobs run on an executor (`executors`), never in a page's script, so leaving the page, reloading it or
closing the tab does not stop them; a page only reads a job's fields. A job's function gets the job and calls
`job.report(fraction, message)` as it goes; once cancellation has been asked for, `report` raises
`Cancelled`, which ends the job as cancelled. `JobBoard` keeps keyed jobs so that asking twice for the
same work (the same map of the same model) gives the same job, running or done; it keeps the results of the
most recently used finished jobs only.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = frozenset({DONE, FAILED, CANCELLED, "stopped", "diverged", "interrupted"})


class Cancelled(Exception):
    """Raised inside a job's function once its cancellation has been requested."""


def new_id(prefix: str) -> str:
    """`prefix-YYYYMMDD-HHMMSS-xxxx`: sortable by creation time, and unguessable enough to share in a URL."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class Job:
    """One unit of background work. The executor sets `status`, `started`, `finished`, `result`, `error`;
    the work itself sets `fraction` and `message` through `report` / `update`."""

    def __init__(self, label: str, *, kind: str = "job", owner: str | None = None, key: Any = None,
                 expected_seconds: float | None = None):
        self.id = new_id(kind)
        self.label, self.kind, self.owner, self.key = label, kind, owner, key
        self.expected_seconds = expected_seconds  # a probe's estimate of the whole job, if one was made
        self.status = QUEUED
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.fraction = 0.0
        self.message = ""
        self.result: Any = None
        self.error: str | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._eta: tuple[float, float] | None = None  # (seconds left, when that was said)

    # ---------------------------------------------------------------- what the work calls

    def update(self, fraction: float, message: str | None = None, eta: float | None = None) -> None:
        """Record progress (0…1), optionally with what is happening and a better estimate of the seconds left
        than the proportional one (a run knows its measured epoch times)."""
        self.fraction = min(1.0, max(0.0, float(fraction)))
        if message is not None:
            self.message = message
        self._eta = None if eta is None else (max(0.0, eta), time.monotonic())

    def report(self, fraction: float, message: str | None = None) -> None:
        """`update`, then raise `Cancelled` if the job was asked to stop: the hook for any progress callback."""
        self.update(fraction, message)
        if self._cancel.is_set():
            raise Cancelled()

    # ---------------------------------------------------------------- what observers call

    def cancel(self) -> None:
        """Ask the job to stop. A queued job never starts; a running one stops at its next report."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.status in FINAL

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is finished (True) or `timeout` seconds passed (False)."""
        return self._done.wait(timeout)

    @property
    def elapsed(self) -> float:
        """Seconds since it started (0 while queued), up to when it finished."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def eta(self) -> float | None:
        """Seconds left. What the work measured (its own estimate when it gave one, else extrapolated from the
        elapsed time and the fraction done) and, when there is one, the probe's estimate of the whole job less the
        time spent: before 5 % is done only the probe's (early progress is too coarse to extrapolate, and a first
        epoch is often slow), then more and more what was measured, only that from 25 %. None while there is
        nothing to go on yet."""
        if self.done or self.status != RUNNING:
            return None
        measured = None
        if self._eta is not None:
            left, said = self._eta
            measured = max(0.0, left - (time.monotonic() - said))
        elif self.fraction >= 0.01 and self.elapsed >= 0.5:
            measured = self.elapsed * (1 - self.fraction) / self.fraction
        if self.expected_seconds is None:
            return measured
        prior = max(0.0, self.expected_seconds - self.elapsed)
        trust = min(1.0, max(0.0, (self.fraction - 0.05) / 0.20))
        return prior if measured is None else trust * measured + (1 - trust) * prior

    # ---------------------------------------------------------------- the executor's side

    def _start(self) -> None:
        self.status, self.started = RUNNING, time.time()

    def _finish(self, status: str, result: Any = None, error: str | None = None) -> None:
        self.result, self.error = result, error
        self.finished = time.time()
        if self.started is None:
            self.started = self.finished
        if status == DONE:
            self.fraction = 1.0
        self.status = status
        self._finalize()
        self._done.set()  # after `_finalize`: whoever waits sees everything the ending wrote

    def _finalize(self) -> None:
        """Called once the job has ended, before anyone waiting is woken (a subclass records the outcome)."""


def run_job(job: Job, fn: Callable[[Job], Any]) -> None:
    """Execute `fn(job)` and record how it ended; never raises (a crashing job must not take its worker, or
    the server, down). Used by every executor."""
    if job.cancel_requested:
        job._finish(CANCELLED)
        return
    job._start()
    try:
        job._finish(DONE, fn(job))
    except Cancelled:
        job._finish(CANCELLED)
    except MemoryError:
        job._finish(FAILED, error="out of memory: use a smaller model, batch or dataset")
    except Exception as err:  # noqa: BLE001 — any error becomes the job's message
        job._finish(FAILED, error=f"{type(err).__name__}: {err}" if not str(err) else str(err))


class JobBoard:
    """Keyed jobs on one executor, so that the same request gives the same job; finished jobs are kept for
    reuse, at most `keep` of them (least recently used dropped first). A failed or cancelled job is replaced
    by a fresh one when asked for again."""

    def __init__(self, executor, keep: int = 32):
        self.executor, self.keep = executor, keep
        self._jobs: OrderedDict[Any, Job] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Job | None:
        with self._lock:
            self._prune()
            job = self._jobs.get(key)
            if job is not None:
                self._jobs.move_to_end(key)
            return job

    def submit(self, key, fn: Callable[[Job], Any], label: str, *, owner: str | None = None,
               expected_seconds: float | None = None) -> Job:
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.status in (FAILED, CANCELLED):
                job = Job(label, key=key, owner=owner, expected_seconds=expected_seconds)
                self._jobs[key] = job
                self.executor.submit(job, fn)
            self._jobs.move_to_end(key)
            self._prune()
            return job

    def _prune(self) -> None:
        """Drop the least recently used finished jobs beyond `keep` (jobs still going are never dropped)."""
        finished = [k for k, j in self._jobs.items() if j.done]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[k]

    def __len__(self) -> int:
        return len(self._jobs)


def format_duration(seconds: float | None) -> str:
    """'40 ms', '2.5 s', '12 s', '3 min 05 s', '1 h 02 min': how long something took or will take, for people."""
    if seconds is None:
        return "—"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def progress_text(job: Job) -> str:
    """'elapsed 12 s · about 40 s left' (or the queue / final state): the one wording for every progress bar."""
    if job.status == QUEUED:
        return "waiting for a free worker"
    text = f"elapsed {format_duration(job.elapsed)}"
    eta = job.eta()
    if not job.done and eta is not None:
        text += f" · about {format_duration(eta)} left"
    return text
