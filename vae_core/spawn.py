"""Pools of spawned worker processes that start clean. A spawned process is a fresh interpreter (safe beside
threads and torch), but it first re-runs its parent's `__main__` file (multiprocessing's spawn); in a Streamlit
server that is the page script last run — Streamlit installs each page as `__main__` while it runs — so each new
worker would run a page, without a browser, before its work. Workers are started here while `__main__` is an
empty module, all of them at once."""
from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
import types
from concurrent.futures import ProcessPoolExecutor

_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def without_main_script():
    """While this holds, `__main__` is an empty module with no file to re-run."""
    with _MAIN_LOCK:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def started() -> bool:
    """A no-op for a worker process: once it returns, the worker has started."""
    return True


def process_pool(workers: int, **kwargs) -> ProcessPoolExecutor:
    """A `ProcessPoolExecutor` of `workers` spawned processes (`kwargs`: its initializer and initargs), every one
    started now, in the background, without the parent's `__main__` script."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), **kwargs)
    with without_main_script():
        for _ in range(workers):  # the pool starts a process per task while none is idle
            pool.submit(started)
    return pool
