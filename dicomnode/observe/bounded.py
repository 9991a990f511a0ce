"""A call that the HTTP endpoint may wait for only so long (a database that hangs, a slow disk).

The call runs on a daemon thread, one at a time: callers that come while it runs wait for that
same call (up to the timeout) instead of piling more threads up behind whatever hangs, and a
call that never returns never holds up the process's exit.
"""

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class BoundedCall(Generic[T]):
    """`function()` on its own thread; `__call__` returns its result or raises TimeoutError."""

    def __init__(self, function: Callable[[], T], timeout_seconds: float, name: str) -> None:
        self.function = function
        self.timeout_seconds = timeout_seconds
        self.name = name
        self._lock = threading.Lock()
        self._current: Future[T] | None = None

    def _run(self, result: "Future[T]") -> None:
        try:
            result.set_result(self.function())
        except BaseException as exc:  # handed to the caller, which decides
            result.set_exception(exc)

    def __call__(self) -> T:
        with self._lock:
            if self._current is None or self._current.done():
                self._current = Future()
                threading.Thread(
                    target=self._run, args=(self._current,), name=self.name, daemon=True
                ).start()
            current = self._current
        try:
            return current.result(timeout=self.timeout_seconds)
        except TimeoutError:
            limit = f"{self.timeout_seconds:g} s"
            raise TimeoutError(f"{self.name} did not finish within {limit}") from None
