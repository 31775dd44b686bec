"""What runs really take on this server against their probe's estimate (`estimates.run_seconds`), so that the
queue and the pages say what a run will take here, not what its probe measured. A probe times a run's epochs and
its end-of-run evaluation in the server's process; a run also starts (a worker process, loading its data), and its
epochs run in a worker with its share of the cores and beside other runs. So each finished run gives three
figures: its start-up seconds, and the ratios measured/probed of its epochs and of its evaluation; an estimate is
start-up + ratio·epochs + ratio·evaluation, each the median of the last runs (robust to one odd run). A fresh
process's first epoch is slow (its first steps allocate and set up): what it took over the other epochs' pace counts
as start-up, not as the epochs' ratio, or a short run would teach the queue that every epoch is that slow."""
from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """A probe's figures for one run: seconds of its epochs and of its end-of-run evaluation."""

    fit_seconds: float
    end_seconds: float = 0.0

    @classmethod
    def of(cls, estimate) -> "Probe | None":
        """From an `estimates.Estimate`, or plain seconds (all of them epochs), or None."""
        if estimate is None:
            return None
        if isinstance(estimate, (int, float)):
            return cls(float(estimate))
        return cls(estimate.fit_seconds, estimate.end_seconds)


@dataclass(frozen=True)
class Measured:
    """What a finished run took: in all (from submission to its end, less its time queued), in its epochs (`fit`)
    and in its end-of-run evaluation."""

    total_seconds: float
    fit_seconds: float
    end_seconds: float = 0.0


def steady_fit_seconds(fit_seconds: float, epoch_seconds: list[float]) -> float:
    """A run's epochs' time at their steady pace: less what its first epoch took over the median of the others
    (`epoch_seconds`, each epoch's; nothing to compare a single epoch with)."""
    if len(epoch_seconds) < 2:
        return fit_seconds
    return fit_seconds - max(0.0, epoch_seconds[0] - statistics.median(epoch_seconds[1:]))


class Calibration:
    """The last `keep` finished runs' start-up seconds and ratios. Thread-safe."""

    def __init__(self, keep: int = 20):
        self._startup: deque[float] = deque(maxlen=keep)
        self._fit: deque[float] = deque(maxlen=keep)
        self._end: deque[float] = deque(maxlen=keep)
        self._keep, self._runs = keep, 0
        self._lock = threading.Lock()

    def add(self, probe: Probe, measured: Measured, *, start_up: bool = True, pace: bool = True) -> None:
        """Learn from a finished run. `start_up` False: its ratios only (a process's first run also waited for the
        process to be ready and loaded its data into the process's cache: later runs there will not; on a fresh
        server a 2.8-s run was told 6.6 s when the first runs of all set the start-up). `pace` False: not its
        epochs' ratio either (a process's first run of a single epoch: that epoch holds the process's first-epoch
        set-up, which no other epoch shows apart; 1.3 to 5 times the steady ratio in the class bench)."""
        with self._lock:
            self._runs = min(self._keep, self._runs + 1)
            if start_up:
                self._startup.append(max(0.0, measured.total_seconds - measured.fit_seconds - measured.end_seconds))
            if pace and probe.fit_seconds > 0:
                self._fit.append(measured.fit_seconds / probe.fit_seconds)
            if probe.end_seconds > 0 and measured.end_seconds > 0:
                self._end.append(measured.end_seconds / probe.end_seconds)

    def expected(self, probe: Probe) -> float:
        """Seconds a run with these probe figures should take here (the probe's own figures before any run
        finished)."""
        with self._lock:
            startup = statistics.median(self._startup) if self._startup else 0.0
            fit = statistics.median(self._fit) if self._fit else 1.0
            end = statistics.median(self._end) if self._end else fit
        return startup + fit * probe.fit_seconds + end * probe.end_seconds

    @property
    def runs(self) -> int:
        """How many finished runs it has learnt from."""
        with self._lock:
            return self._runs
