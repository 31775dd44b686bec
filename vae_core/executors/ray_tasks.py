"""The Ray executor: each run is a Ray task asking for `num_cpus` (and, on a cluster with GPUs, a fraction of one),
on a cluster at an address or on a private local Ray started on 127.0.0.1 only. Its progress and Stop go through
one mailbox actor."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from .local import ExecutorError, LocalExecutor, cores
from .relay import Relay, follow

ENV_RAY_CPUS = "VAE_RAY_CPUS_PER_RUN"
ENV_RAY_GPUS = "VAE_RAY_GPUS_PER_RUN"
DEFAULT_GPUS_PER_RUN = 0.25  # several small VAEs share one GPU
LOOPBACK = ("127.0.0.1", "localhost", "::1")


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


def import_ray():
    """Ray, imported on first use: an optional extra (`pip install "vae-core[ray]"`) that takes 0.3 s to import."""
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install 'vae-core[ray]' (or pip install ray)") from None
    return ray


def _prepare_environment(address: str | None) -> None:
    """Put into this process's environment, before Ray is imported (it reads them then; its own processes inherit
    them), what a Ray on this machine needs. On the loopback interface, Ray's local-only mode: on Linux Ray
    otherwise turns "127.0.0.1" into the machine's routable address, for the servers it starts and the address
    it connects to. For a private local Ray (no address), token authentication with a token in the environment
    (a fresh one unless it already has one): left to itself, Ray would write a token into ~/.ray/, which every
    later `ray start` on this machine would then use."""
    needed = {}
    if not address or address.rsplit(":", 1)[0].strip("[]") in LOOPBACK:
        needed["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if not address:
        needed["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules and any(os.environ.get(k) != v for k, v in needed.items()):
        raise ExecutorError("Ray was imported in this process before the ray executor could set it up (local-only "
                            f"mode, token authentication: {', '.join(needed)}); start the ray executor before "
                            "anything else imports Ray, or set those variables before the process starts")
    os.environ.update(needed)
    if not address:
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_urlsafe(32))


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
    Without `address` (and `$RAY_ADDRESS`), a private local Ray is started on 127.0.0.1 only."""

    remote = True  # workers may be on other machines: data is shipped to them

    def __init__(self, address: str | None = None, *, cpus_per_run: float | None = None,
                 gpus_per_run: float | None = None, max_workers: int | None = None):
        address = address or os.environ.get("RAY_ADDRESS") or None
        _prepare_environment(address)
        self.ray = ray = import_ray()
        self.started_ray = False
        if address:
            _reachable(address)  # ray.init would otherwise retry a wrong address for many minutes
        if not ray.is_initialized():  # (a process has one Ray connection: an existing one is used)
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # never one found on this machine; its sockets and logs in a folder removed at shutdown
                self.temp_dir = tempfile.mkdtemp(prefix="vae-ray-")
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
        follow(task.future(), lambda: ray.get(self._mailbox.take.remote(key)),
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
        """The local executor's shutdown; then a private Ray is stopped (at exit Ray may have done so already)
        and its folder removed."""
        super().shutdown(wait=wait, cancel=cancel, timeout=timeout)
        if self.started_ray:
            self.ray.shutdown()
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.started_ray = False
