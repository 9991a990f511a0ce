"""Log lines that a flood cannot multiply: at most one per kind of event and address a minute.

A caller that opens thousands of connections a second, each refused at once, would otherwise
write thousands of identical warnings a second and bury everything else in the log (and fill its
disk). The metrics still count every one; the log says it once, and the next line of that kind
says how many it left out.
"""

import logging
import threading
import time
from collections.abc import Callable, Hashable

INTERVAL_SECONDS = 60.0


class ThrottledWarnings:
    """`warning(key, msg, *args)` logs at most once per `interval` seconds for each `key`
    (`log(level, ...)` at another level)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._left_out: dict[Hashable, int] = {}

    def warning(self, key: Hashable, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> None:
        """At `level`, at most once per interval for `key` (a monitor's C-ECHO is INFO)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._left_out[key] = self._left_out.get(key, 0) + 1
                return
            left_out = self._left_out.pop(key, 0)
            self._last[key] = now
            if len(self._last) > 4096:  # keys of a long-gone flood: forget those past interval
                for old in [k for k, at in self._last.items() if now - at >= self._interval]:
                    del self._last[old]
                    self._left_out.pop(old, None)
        if left_out:
            msg += f" ({left_out} more like it in the last {self._interval:g} s not logged)"
        self._logger.log(level, msg, *args)
