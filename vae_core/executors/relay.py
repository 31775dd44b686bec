"""Progress from work executed away from its run (a worker process, a Ray task): a `Relay` sends it back, thinned,
and reads Stop from the driver; `follow` delivers it to the run in the driver until the work ends."""
from __future__ import annotations

import time
from concurrent import futures
from typing import Callable

from ..jobs import Cancelled

UPDATE_EVERY_S = 0.2  # a relay sends at most this often (epochs always), and polls Stop this often


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


def follow(work: futures.Future, receive: Callable[[], list], request_stop: Callable[[], None], reporter) -> None:
    """In the driver, until `work` is done: deliver what it sent, and pass the reporter's Stop on. `receive()`
    returns the messages sent so far without waiting; the work's messages have all been sent once it is done, so
    the last call sees them all."""
    stop_sent = False
    while True:
        finished = futures.wait([work], timeout=UPDATE_EVERY_S).done
        for message in receive():
            deliver(message, reporter)
        if reporter.cancel_requested and not stop_sent:
            request_stop()
            stop_sent = True
        if finished:
            return
