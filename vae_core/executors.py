"""Where background work runs.

An executor is a bounded first-in-first-out queue in front of `max_workers` driver threads in this process (the
Streamlit server, or the CLI): at most that many jobs run at once, the rest wait in order, a queued job can be
cancelled, and a job that raises is recorded as failed while the worker goes on with the next one.

A run's heavy part (`runs.execute`) goes through `call`, which decides where it executes:

- `LocalExecutor` with one worker: in the driver thread itself, with all the cores for torch's threads;
- `LocalExecutor` with more: in a pool of worker processes (Python's GIL would otherwise make threads take
  turns), each with `cores // workers` torch threads, so runs × threads ≤ cores;
- `RayExecutor`: as a Ray task asking for `num_cpus` (and, on a cluster with GPUs, a fraction of one), on a local
  Ray started on 127.0.0.1 only or on the cluster at an address.

Work executed elsewhere reports through a `Relay`, which sends its progress back (at most five updates a second,
every finished epoch) and reads Stop from the driver; `follow` delivers the messages to the run in the driver.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import queue
import secrets
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections import deque
from concurrent import futures
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import torch

from .jobs import CANCELLED, Cancelled, Job, run_job

class ExecutorError(RuntimeError):
    """An executor cannot be set up (Ray missing, a cluster unreachable); the message says what to do."""


ENV_WORKERS = "VAE_MAX_RUNS"
EXIT_GRACE_S = 10.0  # at exit, how long running jobs get to stop at their next step
UPDATE_EVERY_S = 0.2  # a relay sends at most this often (epochs always), and polls Stop this often
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


# ---------------------------------------------------------------- reporting across processes

class Relay:
    """The reporter of work executed away from its run. Its reports go to `put` at most once per `UPDATE_EVERY_S`:
    the latest progress update, and the epochs finished since the last message (with the latest decoder preview);
    `close` sends what is left, and the work's wrapper calls it before the work ends. Stop is read from `stopped`
    (polled at most every `UPDATE_EVERY_S`, and remembered once seen)."""

    def __init__(self, put: Callable[[tuple], None], stopped: Callable[[], bool]):
        self._put, self._stopped = put, stopped
        self._last_sent = self._last_polled = 0.0
        self._update: tuple | None = None
        self._records: list[dict] = []
        self._preview = None
        self._stop = False

    def update(self, fraction: float, message: str | None = None, eta: float | None = None) -> None:
        self._update = (fraction, message, eta)
        self._maybe_send()

    def report(self, fraction: float, message: str | None = None) -> None:
        self.update(fraction, message)
        if self.cancel_requested:
            raise Cancelled()

    def epoch(self, record: dict, preview) -> None:
        self._records.append(record)
        if preview is not None:
            self._preview = preview
        self._maybe_send()

    @property
    def cancel_requested(self) -> bool:
        if not self._stop and time.monotonic() - self._last_polled >= UPDATE_EVERY_S:
            self._last_polled = time.monotonic()
            self._stop = bool(self._stopped())
        return self._stop

    def _maybe_send(self) -> None:
        if time.monotonic() - self._last_sent >= UPDATE_EVERY_S:
            self.close()

    def close(self) -> None:
        """Send whatever has not been sent yet."""
        if self._records:
            self._put(("epochs", (self._records, self._preview)))
            self._records, self._preview = [], None
        if self._update is not None:
            self._put(("update", self._update))
            self._update = None
        self._last_sent = time.monotonic()


def deliver(message: tuple, reporter) -> None:
    """Apply one relayed message to the reporter in the driver (a `Run`)."""
    kind, payload = message
    if kind == "update":
        reporter.update(*payload)
    elif kind == "epochs":
        records, preview = payload
        for i, record in enumerate(records):
            reporter.epoch(record, preview if i == len(records) - 1 else None)


def follow(wait: Callable[[float], bool], receive: Callable[[], list], request_stop: Callable[[], None],
           reporter) -> None:
    """In the driver, until the remote work ends: deliver what it sent, and pass the reporter's Stop on. `wait(s)`
    blocks until the work has ended (True) or `s` seconds passed; `receive()` returns the messages sent so far
    without waiting. The work's messages are all delivered before it ends, so the last drain sees them all."""
    stop_sent = False
    while True:
        finished = wait(UPDATE_EVERY_S)
        for message in receive():
            deliver(message, reporter)
        if reporter.cancel_requested and not stop_sent:
            request_stop()
            stop_sent = True
        if finished:
            return


_WORKER: dict = {}  # in a worker process: the queue to the driver and the Stop flags, given when it starts


def _init_worker(threads: int, messages, stops, server: int) -> None:
    _set_torch_threads(threads)
    _WORKER.update(messages=messages, stops=stops)
    threading.Thread(target=_exit_with_parent, args=(server,), name="vae-orphan-check", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker process once the server that started it is gone. A server that exits normally shuts its
    pool down; one that is killed (SIGKILL, a crash) leaves its idle workers waiting on a queue nobody writes to,
    each holding torch's memory — they would stay forever."""
    while os.getppid() == parent:  # (`parent` is passed in: it may be gone before this worker got here)
        time.sleep(ORPHAN_CHECK_S)
    os._exit(0)


def _in_worker_process(fn, args, kwargs, slot: int):
    """What a worker process executes: `fn` with a relay to the driver thread in charge of `slot`; an end marker
    follows its last message, so the driver knows everything has arrived."""
    messages, stops = _WORKER["messages"], _WORKER["stops"]
    relay = Relay(lambda m: messages.put((slot, m)), lambda: bool(stops[slot]))
    try:
        return fn(*args, relay, **kwargs)
    finally:
        relay.close()
        messages.put((slot, ("end", None)))


def _set_torch_threads(threads: int) -> None:
    torch.set_num_threads(threads)


ORPHAN_CHECK_S = 1.0  # how often a worker process checks that its server is still there


def _ready() -> bool:
    """A no-op for a worker process: once it returns, the worker has started and imported torch."""
    return True


class _ProcessPool:
    """Worker processes for one executor: a stdlib process pool, one queue that all workers send on (a dispatcher
    thread hands each message to the driver thread it is for), and one Stop flag per driver thread."""

    def __init__(self, workers: int, threads: int):
        context = multiprocessing.get_context("spawn")  # a clean interpreter: safe beside threads and torch
        self.messages = context.Queue()
        self.stops = context.Array("b", workers, lock=False)
        self.inboxes = [queue.Queue() for _ in range(workers)]
        self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                        initargs=(threads, self.messages, self.stops, os.getpid()))
        for _ in range(workers):  # start every worker now (in the background), not when the first run waits
            self.pool.submit(_ready)
        threading.Thread(target=self._dispatch, name="vae-relay", daemon=True).start()

    def _dispatch(self) -> None:
        while True:
            try:
                item = self.messages.get()
            except (EOFError, OSError, ValueError):  # the queue went away with its process (interpreter exit)
                return
            if item is None:
                return
            slot, message = item
            self.inboxes[slot].put(message)

    def call(self, fn, args, kwargs, slot: int, reporter):
        self.stops[slot] = 0
        inbox = self.inboxes[slot]
        future = self.pool.submit(_in_worker_process, fn, args, kwargs, slot)
        received, ended = [], [False]

        def take(block: float | None) -> None:
            try:
                while True:
                    message = inbox.get(timeout=block) if block else inbox.get_nowait()
                    block = None
                    if message[0] == "end":
                        ended[0] = True
                        return
                    received.append(message)
            except queue.Empty:
                return

        def wait(seconds: float) -> bool:
            if not futures.wait([future], timeout=seconds).done:
                return False
            if future.exception() is None:
                while not ended[0]:  # the result can overtake the last messages: they are on their way
                    take(block=1.0)
            return True

        def receive() -> list:
            take(block=None)
            out = received[:]
            received.clear()
            return out

        follow(wait, receive, lambda: self.stops.__setitem__(slot, 1), reporter)
        return future.result()

    def shutdown(self, wait: bool) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
        self.messages.put(None)


# ---------------------------------------------------------------- the local executor

class LocalExecutor:
    """A FIFO queue in front of at most `max_workers` driver threads (started on demand, daemon threads, so they
    never keep a stopping process alive). `processes` (default: when there is more than one worker) executes each
    `call` in a pool of as many worker processes."""

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
        self._pool: _ProcessPool | None = None
        self._slot = threading.local()  # which driver thread this is: its Stop flag and inbox in the pool
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
        _set_torch_threads(self.threads_per_job)  # this thread's own (OpenMP and MKL keep it per thread)
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

    def _process_pool(self) -> _ProcessPool:
        with self._cond:
            if self._pool is None:
                self._pool = _ProcessPool(self.max_workers, self.threads_per_job)
            return self._pool

    def _reset_pool(self, broken: _ProcessPool) -> None:
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


# ---------------------------------------------------------------- Ray

ENV_EXECUTOR = "VAE_EXECUTOR"
ENV_RAY_CPUS = "VAE_RAY_CPUS_PER_RUN"
ENV_RAY_GPUS = "VAE_RAY_GPUS_PER_RUN"
DEFAULT_GPUS_PER_RUN = 0.25  # several small VAEs share one GPU


class _Mailbox:
    """A Ray actor between the driver and its tasks: what each run sent (progress, epochs), and Stop requests."""

    def __init__(self):
        self.messages: dict[str, list] = {}
        self.stops: set[str] = set()

    def put(self, key: str, message: tuple) -> None:
        self.messages.setdefault(key, []).append(message)

    def take(self, key: str) -> list:
        return self.messages.pop(key, [])

    def stop(self, key: str) -> None:
        self.stops.add(key)

    def stopped(self, key: str) -> bool:
        return key in self.stops

    def sync(self) -> None:
        """A call that returns once every earlier call from the same caller has been handled (Ray runs an actor's
        calls from one caller in order)."""


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def import_ray(local: bool = False):
    """Ray, imported on first use: an optional extra (`pip install "vae-core[ray]"`) that takes 0.3 s to import.
    `local`: this process will use a Ray on this machine's loopback interface. On Linux Ray otherwise turns
    "127.0.0.1" into the machine's routable address, both for the servers it starts and for the address it
    connects to; its local-only mode (read when Ray is imported) keeps everything on 127.0.0.1."""
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install 'vae-core[ray]' (or pip install ray)") from None
    return ray


def _in_ray_task(fn, args, kwargs, mailbox, key):
    """What a Ray worker executes: `fn` with a relay through the mailbox actor (and the shared values it was given,
    fetched from the object store)."""
    ray = import_ray()
    kwargs = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in kwargs.items()}
    relay = Relay(lambda m: mailbox.put.remote(key, m), lambda: ray.get(mailbox.stopped.remote(key)))
    try:
        return fn(*args, relay, **kwargs)
    finally:
        relay.close()
        ray.get(mailbox.sync.remote())  # every message delivered before the task ends


def _reachable(address: str, timeout: float = 10.0) -> None:
    """Raise a clear error unless something answers at HOST:PORT."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as err:
        raise ExecutorError(f"cannot reach a Ray cluster at {address} ({err}); start one with `ray start --head` "
                            "or check --ray-address / $RAY_ADDRESS") from None


def ray_options(resources: dict, cpus_per_run: float = 1.0, gpus_per_run: float | None = None) -> dict:
    """The resources one run asks Ray for: `cpus_per_run` CPUs (its torch threads) and, when the cluster has GPUs,
    `gpus_per_run` of one (default a quarter: several small VAEs share a GPU); never retried (a failure is
    reported, and a sweep resumes only its missing runs)."""
    gpus = gpus_per_run if gpus_per_run is not None else (DEFAULT_GPUS_PER_RUN if resources.get("GPU") else 0.0)
    return {"num_cpus": cpus_per_run, "num_gpus": gpus, "max_retries": 0}


class RayExecutor(LocalExecutor):
    """Runs as Ray tasks. The queue, bound and order are the local executor's (one driver thread per run in
    flight, as many as the cluster has room for); each thread submits its run's task and relays its progress.
    Without `address` (and `$RAY_ADDRESS`), a local Ray is started on 127.0.0.1 only."""

    remote = True  # workers may be on other machines: data is shipped to them

    def __init__(self, address: str | None = None, *, cpus_per_run: float | None = None,
                 gpus_per_run: float | None = None, max_workers: int | None = None):
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.ray = ray = import_ray(local=not address or address.rsplit(":", 1)[0].strip("[]") in LOOPBACK)
        self.started_ray = False
        if address:
            _reachable(address)  # ray.init would otherwise retry a wrong address for many minutes
        if not ray.is_initialized():  # (a process has one Ray connection: an existing one is used)
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # a private local Ray (never one found on this machine), on the loopback interface only
                self.temp_dir = tempfile.mkdtemp(prefix="vae-ray-")  # its sockets and logs, removed at shutdown
                # Token authentication with a fresh token in the environment, which Ray's own processes inherit:
                # left to itself Ray would write a token into ~/.ray/, which then changes every later `ray start`
                os.environ["RAY_AUTH_MODE"] = "token"
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_urlsafe(32)
                ray.init(address="local", num_cpus=cores(), include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1", _temp_dir=self.temp_dir)
                self.started_ray = True
        resources = ray.cluster_resources()
        cpus_per_run = cpus_per_run or float(os.environ.get(ENV_RAY_CPUS, 1))
        gpus_env = os.environ.get(ENV_RAY_GPUS)
        self.options = ray_options(resources, cpus_per_run, float(gpus_env) if gpus_env else gpus_per_run)
        capacity = max(1, int(resources.get("CPU", 1) // cpus_per_run))
        super().__init__(max_workers or capacity, name="vae-ray", processes=False)
        self._task = ray.remote(_in_ray_task)
        self._mailbox = ray.remote(_Mailbox).options(num_cpus=0).remote()
        self._shared: dict = {}

    def call(self, fn: Callable, args: tuple, reporter, **kwargs) -> Any:
        ray = self.ray
        key = f"{threading.get_ident()}-{time.monotonic_ns()}"
        task = self._task.options(**self.options).remote(fn, args, kwargs, self._mailbox, key)
        follow(lambda seconds: bool(ray.wait([task], timeout=seconds)[0]),
               lambda: ray.get(self._mailbox.take.remote(key)),
               lambda: self._mailbox.stop.remote(key), reporter)
        try:
            return ray.get(task)
        except ray.exceptions.RayTaskError as err:  # the task raised: its own error and message
            cause = err.cause if isinstance(getattr(err, "cause", None), Exception) else None
            raise cause or RuntimeError(str(err).splitlines()[-1]) from None
        except ray.exceptions.RayError as err:  # the worker died, the node went away, …
            raise RuntimeError(f"the Ray worker running it died ({type(err).__name__}: "
                               f"{str(err).splitlines()[0]}); the other runs go on") from None

    def share(self, key, make: Callable[[], Any]) -> Any:
        """`make()` put in Ray's object store once per key (a dataset every run of a sweep needs)."""
        with self._cond:
            if key not in self._shared:
                self._shared[key] = self.ray.put(make())
            return self._shared[key]

    def shutdown(self, wait: bool = True, cancel: bool = False, timeout: float | None = None) -> None:
        super().shutdown(wait=wait, cancel=cancel, timeout=timeout)
        if self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def from_environment() -> LocalExecutor:
    """The executor the app uses: `$VAE_EXECUTOR` = `local` (default) or `ray` (with `$RAY_ADDRESS`, if set)."""
    kind = os.environ.get(ENV_EXECUTOR, "local").strip().lower()
    if kind == "ray":
        return RayExecutor()
    if kind != "local":
        raise ExecutorError(f"{ENV_EXECUTOR} must be 'local' or 'ray', got {kind!r}")
    return LocalExecutor(name="vae-run")
