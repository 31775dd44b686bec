"""The local executor: a bounded first-in-first-out queue in front of `max_workers` driver threads in this process
(the Streamlit server, or the CLI). At most that many jobs run at once, the rest wait in order, a queued job can
be cancelled, and a job that raises is recorded as failed while the worker goes on with the next one."""
from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import torch

from ..jobs import CANCELLED, Job, run_job
from .processes import ProcessPool


class ExecutorError(RuntimeError):
    """An executor cannot be set up (Ray missing, a cluster unreachable); the message says what to do."""


ENV_WORKERS = "VAE_MAX_RUNS"
EXIT_GRACE_S = 10.0  # at exit, how long running jobs get to stop at their next step
_EXECUTORS: "weakref.WeakSet[LocalExecutor]" = weakref.WeakSet()


def cores() -> int:
    return os.cpu_count() or 1


def default_workers() -> int:
    """`$VAE_MAX_RUNS` (the admin's cap on runs at once), else half the cores, at least 1: one training already
    keeps two cores busy with torch's own threads."""
    env = os.environ.get(ENV_WORKERS)
    if env:
        return max(1, int(env))
    return max(1, cores() // 2)


class LocalExecutor:
    """A FIFO queue in front of at most `max_workers` driver threads (started on demand, daemon threads, so they
    never keep a stopping process alive). `processes` (default: when there is more than one worker) executes each
    `call` in a pool of as many worker processes, else in the driver thread with `cores // max_workers` torch
    threads (all of them for one worker)."""

    remote = False  # its workers see this machine's workspace

    def __init__(self, max_workers: int | None = None, name: str = "vae-worker", processes: bool | None = None):
        self.max_workers = max_workers or default_workers()
        self.name = name
        self.threads_per_job = max(1, cores() // self.max_workers)
        self.processes = self.max_workers > 1 if processes is None else processes
        self._queue: deque[tuple[Job, Callable[[Job], Any]]] = deque()
        self._running: set[Job] = set()
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._closed = False
        self._pool: ProcessPool | None = None
        self._slot = threading.local()  # which driver thread this is: its queue and Stop flag in the pool
        _EXECUTORS.add(self)

    # ------------------------------------------------------------ the queue

    def submit(self, job: Job, fn: Callable[[Job], Any]) -> Job:
        with self._cond:
            if self._closed:
                raise RuntimeError("the executor has been shut down")
            self._queue.append((job, fn))
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self.max_workers and len(self._threads) < len(self._queue) + len(self._running):
                slot = min(set(range(self.max_workers)) - {t.slot for t in self._threads})
                t = threading.Thread(target=self._work, args=(slot,), name=f"{self.name}-{slot}", daemon=True)
                t.slot = slot
                self._threads.append(t)
                t.start()
            self._cond.notify()
        return job

    def _work(self, slot: int) -> None:
        torch.set_num_threads(self.threads_per_job)  # this thread's own (OpenMP and MKL keep it per thread)
        self._slot.index = slot
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

    def queued(self) -> list[Job]:
        """The waiting jobs, next first."""
        with self._cond:
            return [job for job, _ in self._queue]

    # ------------------------------------------------------------ where a call executes

    def call(self, fn: Callable, args: tuple, reporter, **kwargs) -> Any:
        """`fn(*args, reporter, **kwargs)` for a job of this executor: in the calling thread, or in a worker process
        relaying its reports to `reporter`."""
        if not self.processes:
            return fn(*args, reporter, **kwargs)
        slot = getattr(self._slot, "index", None)
        if slot is None:
            raise RuntimeError("call() runs work for a job of this executor: use it inside a submitted job")
        pool = self._process_pool()
        try:
            return pool.call(fn, args, kwargs, slot, reporter)
        except BrokenProcessPool:
            self._reset_pool(pool)
            raise RuntimeError("the worker process running it stopped unexpectedly (out of memory, or killed); "
                               "the other runs go on") from None

    def share(self, key, make: Callable[[], Any]) -> Any:
        """A value the workers need (a dataset): local workers read it themselves, so this just makes it."""
        return make()

    def warm(self) -> None:
        """Start the worker processes now, in the background, so that the first run does not wait for them."""
        if self.processes:
            self._process_pool()

    def _process_pool(self) -> ProcessPool:
        with self._cond:
            if self._pool is None:
                self._pool = ProcessPool(self.max_workers, self.threads_per_job)
            return self._pool

    def _reset_pool(self, broken: ProcessPool) -> None:
        with self._cond:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False)

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
        if self._pool is not None:
            self._pool.shutdown(wait=wait)


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, stop every executor's work at its next step instead of killing the worker threads
    in the middle of a torch call (which aborts the process)."""
    for executor in list(_EXECUTORS):
        executor.shutdown(wait=True, cancel=True, timeout=EXIT_GRACE_S)
