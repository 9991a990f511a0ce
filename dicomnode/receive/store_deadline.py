"""A C-STORE waits for the spool and the database so long, then the sender is told.

Storing an instance writes and fsyncs its file and commits its row. A database server that is
frozen (a hung disk under PostgreSQL, a paused VM: its kernel still acknowledges, so no TCP
timeout fires) or a spool on a hung mount made that wait without end: the sender got no answer
for as long as it lasted, and each such association held its place. So each store runs in a
thread of its own here and the association waits for it until its deadline
(`node.store_timeout_seconds`, plus a second per `BYTES_PER_EXTRA_SECOND` of the instance);
past it the sender is answered 0xA700 (`StoreTimedOut`) and the store finishes behind, on its
own: an instance it then records anyway is sent on like any other, and one the sender sends
again replaces it. The threads are daemons: one that never returns does not keep the process
from exiting.
"""

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout

from dicomnode.errors import DicomNodeError

log = logging.getLogger(__name__)

# A second more of the deadline for each this many bytes of the instance: a 2 GiB instance
# written and fsynced at 10 MB/s is not a store that hangs.
BYTES_PER_EXTRA_SECOND = 10 * 1024 * 1024


class StoreTimedOut(DicomNodeError):
    """The spool or the database did not finish storing an instance by its deadline."""


class StoreDeadline:
    """Runs stores in at most `threads` daemon threads; each caller waits for its own until
    its deadline."""

    def __init__(self, threads: int, seconds: float) -> None:
        self.seconds = seconds
        self._threads = threads
        self._started = 0
        self._idle = 0  # threads waiting for a store
        self._queued = 0  # stores no thread has taken yet
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]] = (
            queue.SimpleQueue()
        )

    def deadline_for(self, size: int) -> float:
        return self.seconds + size / BYTES_PER_EXTRA_SECOND

    def run(self, store: Callable[[], None], size: int, sop: str) -> None:
        """`store()`, waited for until the deadline of an instance of `size` bytes; its own
        error is raised, or StoreTimedOut past the deadline."""
        future: Future[None] = Future()
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and self._started < self._threads
            if start:
                self._started += 1
                self._idle += 1
        if start:
            threading.Thread(target=self._serve, name="store", daemon=True).start()
        self._queue.put((store, future))
        seconds = self.deadline_for(size)
        try:
            future.result(timeout=seconds)
        except FutureTimeout:
            if future.cancel():  # never began: every thread is held by a store that hangs
                raise StoreTimedOut(
                    f"no store could begin within {seconds:.0f} s (node.store_timeout_seconds): "
                    "earlier ones wait for the spool or the database"
                ) from None
            future.add_done_callback(lambda done: _finished_late(done, sop))
            raise StoreTimedOut(
                f"the spool or the database did not finish storing it within {seconds:.0f} s "
                "(node.store_timeout_seconds); it goes on behind"
            ) from None

    def _serve(self) -> None:
        while True:
            store, future = self._queue.get()
            with self._lock:
                self._queued -= 1
                self._idle -= 1
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        store()
                    except BaseException as exc:  # the caller's to map to a status
                        future.set_exception(exc)
                    else:
                        future.set_result(None)
            finally:
                with self._lock:
                    self._idle += 1


def _finished_late(future: Future[None], sop: str) -> None:
    """What became of a store whose sender was told 0xA700 at its deadline."""
    try:
        future.result()
    except CancelledError:
        return
    except Exception as exc:
        log.warning("a store past its deadline failed sop=%s: %s", sop, exc)
        return
    log.warning("a store past its deadline finished: the instance is stored sop=%s", sop)
