"""Where background work runs. Every executor is the bounded FIFO queue of driver threads in `local`; a run's heavy
part (`runs.execute`) goes through its `call`, which decides where it executes:

- `LocalExecutor` with one worker: in the driver thread itself, with all the cores for torch's threads;
- `LocalExecutor` with more: in a pool of worker processes (`processes`; Python's GIL would otherwise make threads
  take turns), each with `cores // workers` torch threads, so runs × threads ≤ cores;
- `RayExecutor` (`ray_tasks`): as a Ray task, on a private local Ray on 127.0.0.1 only or on a cluster.

Work executed elsewhere reports through a `Relay` (`relay`), which sends its progress back and reads Stop.
"""
from __future__ import annotations

import os

from .local import ExecutorError, LocalExecutor, cores, default_workers
from .ray_tasks import RayExecutor, ray_options
from .relay import Relay, deliver

__all__ = ["ExecutorError", "LocalExecutor", "RayExecutor", "Relay", "cores", "default_workers", "deliver",
           "from_environment", "ray_options"]

ENV_EXECUTOR = "VAE_EXECUTOR"


def from_environment() -> LocalExecutor:
    """The executor the app uses: `$VAE_EXECUTOR` = `local` (default) or `ray` (with `$RAY_ADDRESS`, if set)."""
    kind = os.environ.get(ENV_EXECUTOR, "local").strip().lower()
    if kind == "ray":
        return RayExecutor()
    if kind != "local":
        raise ExecutorError(f"{ENV_EXECUTOR} must be 'local' or 'ray', got {kind!r}")
    return LocalExecutor(name="vae-run")
