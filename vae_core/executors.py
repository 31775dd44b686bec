"""Where background jobs run. `LocalExecutor` is a bounded pool of worker threads owned by this process (the
Streamlit server, or the CLI): at most `max_workers` jobs run at once, the rest wait in first-in-first-out
order. A job's function runs in a worker thread, so a page that submitted it can go away; a job that raises
is recorded as failed and the worker goes on with the next one.
"""
from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections import deque
from typing import Any, Callable

from .jobs import CANCELLED, Job, run_job

ENV_WORKERS = "VAE_MAX_RUNS"
EXIT_GRACE_S = 10.0  # at exit, how long running jobs get to stop at their next step
_EXECUTORS: "weakref.WeakSet[LocalExecutor]" = weakref.WeakSet()


def default_workers() -> int:
    """`$VAE_MAX_RUNS`, else half the cores (at least 1): one training already keeps two cores busy with
    torch's own threads, so two runs on a 2-core machine would only take turns."""
    env = os.environ.get(ENV_WORKERS)
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 1) // 2)


class LocalExecutor:
    """A FIFO queue in front of at most `max_workers` worker threads (started on demand, daemon threads, so
    they never keep a stopping process alive)."""

    def __init__(self, max_workers: int | None = None, name: str = "vae-worker"):
        self.max_workers = max_workers or default_workers()
        self.name = name
        self._queue: deque[tuple[Job, Callable[[Job], Any]]] = deque()
        self._running: set[Job] = set()
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._closed = False
        _EXECUTORS.add(self)

    def submit(self, job: Job, fn: Callable[[Job], Any]) -> Job:
        with self._cond:
            if self._closed:
                raise RuntimeError("the executor has been shut down")
            self._queue.append((job, fn))
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self.max_workers and len(self._threads) < len(self._queue) + len(self._running):
                t = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            self._cond.notify()
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                job, fn = self._queue.popleft()
                self._running.add(job)
            try:
                run_job(job, fn)
            finally:
                with self._cond:
                    self._running.discard(job)

    def cancel(self, job: Job) -> None:
        """Cancel `job`: taken out of the queue if it has not started, else asked to stop."""
        job.cancel()
        with self._cond:
            for entry in list(self._queue):
                if entry[0] is job:
                    self._queue.remove(entry)
                    job._finish(CANCELLED)

    def position(self, job: Job) -> int | None:
        """1 for the next job to start, 2 for the one after, …; None if `job` is not waiting."""
        with self._cond:
            for i, (queued, _) in enumerate(self._queue):
                if queued is job:
                    return i + 1
        return None

    def load(self) -> tuple[int, int]:
        """(running, queued) jobs right now."""
        with self._cond:
            return len(self._running), len(self._queue)

    def shutdown(self, wait: bool = True, cancel: bool = False, timeout: float | None = None) -> None:
        """Start no new jobs once the queue is empty, and (with `wait`) join the workers. With `cancel`, queued
        jobs are cancelled and running ones asked to stop (a run then keeps its last complete epoch)."""
        with self._cond:
            self._closed = True
            if cancel:
                for job, _ in self._queue:
                    job._finish(CANCELLED)
                self._queue.clear()
                for job in self._running:
                    job.cancel()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for t in threads:
                t.join(timeout)


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, stop every executor's work at its next step instead of killing the worker threads
    in the middle of a torch call (which aborts the process)."""
    for executor in list(_EXECUTORS):
        executor.shutdown(wait=True, cancel=True, timeout=EXIT_GRACE_S)
