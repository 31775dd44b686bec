"""A few recent values kept in memory, shared by every thread of the process (every session of a server)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable


class Recent:
    """At most `size` values by key, the least recently used going first; `get` makes a missing one with `make()`
    (outside the lock, so slow work never blocks other keys: two threads may make the same value once each)."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], object]):
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value
