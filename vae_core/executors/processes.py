"""Worker processes for the local executor: a stdlib process pool, one message queue and one Stop flag per driver
thread (its slot), given to every worker when it starts; the work's relay writes to its slot's queue."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time

import torch

from ..spawn import process_pool
from .relay import Relay, follow

ORPHAN_CHECK_S = 1.0  # how often a worker process checks that its server is still there
# Training yields to the server that started it: on a small machine a class's page views, the health check and a
# new visitor's first page go first, and the runs take what is left (on an idle machine, all of it).
WORKER_NICE = 10
_WORKER: dict = {}  # in a worker process: the queues to the driver threads and their Stop flags


def _init_worker(threads: int, outboxes, stops, server: int) -> None:
    with contextlib.suppress(OSError):  # (where the system does not allow it, they run at the server's priority)
        os.nice(WORKER_NICE)
    torch.set_num_threads(threads)
    _WORKER.update(outboxes=outboxes, stops=stops)
    threading.Thread(target=_exit_with_parent, args=(server,), name="vae-orphan-check", daemon=True).start()
    _warm_up()


def _warm_up() -> None:
    """What a worker's first run would otherwise wait for, done as the worker starts (about 3 s here; the page that
    starts the workers has no run going yet): the training code, and torch._dynamo, which torch imports the first
    time an optimizer is made (2.5 s). Its first run then takes about what its later ones do."""
    from .. import runs  # noqa: F401, PLC0415 — the work's own module (it imports the executors: not at the top)

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _exit_with_parent(parent: int) -> None:
    """End this worker process once the server that started it is gone. A server that exits normally shuts its
    pool down; one that is killed (SIGKILL, a crash) leaves its idle workers waiting on a queue nobody writes to,
    each holding torch's memory — they would stay forever."""
    while os.getppid() == parent:  # (`parent` is passed in: it may be gone before this worker got here)
        time.sleep(ORPHAN_CHECK_S)
    os._exit(0)


def _in_worker_process(fn, args, kwargs, slot: int):
    """What a worker process executes: `fn` with a relay to the driver thread in charge of `slot`. Its queue is a
    `SimpleQueue`, which writes before `put` returns: everything sent is there when the work is done."""
    stops = _WORKER["stops"]
    relay = Relay(_WORKER["outboxes"][slot].put, lambda: bool(stops[slot]))
    try:
        return fn(*args, relay, **kwargs)
    finally:
        relay.close()


class ProcessPool:
    """`workers` worker processes with `threads` torch threads each, for as many driver threads (slots)."""

    def __init__(self, workers: int, threads: int):
        context = multiprocessing.get_context("spawn")  # a clean interpreter: safe beside threads and torch
        self.outboxes = [context.SimpleQueue() for _ in range(workers)]
        self.stops = context.Array("b", workers, lock=False)
        self.pool = process_pool(workers, initializer=_init_worker,  # all started now, not when a run waits
                                 initargs=(threads, self.outboxes, self.stops, os.getpid()))

    def call(self, fn, args, kwargs, slot: int, reporter):
        """`fn(*args, relay, **kwargs)` in a worker, for the driver thread of `slot`, its reports to `reporter`."""
        self.stops[slot] = 0
        outbox = self.outboxes[slot]
        future = self.pool.submit(_in_worker_process, fn, args, kwargs, slot)

        def receive() -> list:
            messages = []
            while not outbox.empty():
                messages.append(outbox.get())
            return messages

        follow(future, receive, lambda: self.stops.__setitem__(slot, 1), reporter)
        return future.result()

    def shutdown(self, wait: bool) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
