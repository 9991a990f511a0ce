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

What else an association waits for in the database is bounded by the same setting
(`DatabaseWaits`): recording a sender's release, reading what a Storage Commitment request asks
about, filing a report a destination sends to the listener.
"""

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

from dicomnode.db.failures import database_away
from dicomnode.errors import StoreTimedOut
from dicomnode.observe.throttle import ThrottledWarnings

log = logging.getLogger(__name__)

T = TypeVar("T")

# A second more of the deadline for each this many bytes of the instance: a 2 GiB instance
# written and fsynced at 10 MB/s is not a store that hangs.
BYTES_PER_EXTRA_SECOND = 10 * 1024 * 1024


class Job(Generic[T]):
    """A call handed to `DaemonThreads`, and its future."""

    __slots__ = ("call", "future")

    def __init__(self, call: Callable[[], T]) -> None:
        self.call: Callable[[], T] | None = call
        self.future: Future[T] = Future()

    def cancel(self) -> bool:
        """Whether it was cancelled before it began; then what the call holds (a whole data
        set) is let go now, not once a thread is free to drop it: during a freeze every
        refused store would otherwise stay in memory."""
        if not self.future.cancel():
            return False
        self.call = None
        return True


class DaemonThreads:
    """At most `threads` daemon threads that run the calls handed to them, in order. Unlike a
    ThreadPoolExecutor's, a thread stuck on a hung mount or a frozen database does not keep the
    process from exiting (those are joined at exit)."""

    def __init__(self, threads: int, name: str) -> None:
        self._threads, self._name = threads, name
        self._started = 0
        self._idle = 0  # threads waiting for a call
        self._queued = 0  # calls no thread has taken yet
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job[object]] = queue.SimpleQueue()

    def submit(self, call: Callable[[], T]) -> Job[T]:
        job = Job(call)
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and self._started < self._threads
            if start:
                self._started += 1
                self._idle += 1
        if start:
            try:
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
            except BaseException:  # no thread (the process's limit): none is counted
                with self._lock:
                    self._started -= 1
                    self._idle -= 1
                    self._queued -= 1
                raise
        self._queue.put(job)  # type: ignore[arg-type]
        return job

    def call_within(self, call: Callable[[], T], seconds: float) -> T:
        """`call()` in one of these threads, waited for `seconds`: its result or its error, or
        TimeoutError past them; the call then goes on behind, or never runs when no thread was
        free to begin it."""
        job = self.submit(call)
        try:
            return job.future.result(timeout=seconds)
        except FutureTimeout:
            job.cancel()
            raise TimeoutError(f"no answer within {seconds:g} s") from None

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            with self._lock:
                self._queued -= 1
                self._idle -= 1
            try:
                call = job.call
                job.call = None
                if call is not None and job.future.set_running_or_notify_cancel():
                    try:
                        result = call()
                    except BaseException as exc:  # the caller's to handle
                        job.future.set_exception(exc)
                    else:
                        job.future.set_result(result)
            finally:
                with self._lock:
                    self._idle += 1


class StoreDeadline:
    """Runs stores in at most `threads` daemon threads; each caller waits for its own until
    its deadline. `describe` turns a failure of a store that finished late into the one line
    the log says of it."""

    def __init__(
        self,
        threads: int,
        seconds: float,
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        self.seconds = seconds
        self._describe = describe
        self._late = ThrottledWarnings(log)
        self._threads = DaemonThreads(threads, "store")

    def deadline_for(self, size: int) -> float:
        return self.seconds + size / BYTES_PER_EXTRA_SECOND

    def run(self, store: Callable[[], None], size: int, sop: str) -> None:
        """`store()`, waited for until the deadline of an instance of `size` bytes; its own
        error is raised, or StoreTimedOut past the deadline."""
        job = self._threads.submit(store)
        seconds = self.deadline_for(size)
        try:
            job.future.result(timeout=seconds)
        except FutureTimeout:
            if job.cancel():  # never began: every thread is held by a store that hangs
                raise StoreTimedOut(
                    f"no store could begin within {seconds:.0f} s (node.store_timeout_seconds): "
                    "earlier ones wait for the spool or the database"
                ) from None
            job.future.add_done_callback(lambda done: self._finished_late(done, sop))
            raise StoreTimedOut(
                f"the spool or the database did not finish storing it within {seconds:.0f} s "
                "(node.store_timeout_seconds); it goes on behind"
            ) from None

    def _finished_late(self, future: Future[None], sop: str) -> None:
        """What became of a store whose sender was told 0xA700 at its deadline."""
        try:
            future.result()
        except CancelledError:
            return
        except Exception as exc:  # each refused store of an outage: a line a minute
            said = self._describe(exc)
            key = type(exc).__name__  # its text may name the file: a line per instance
            self._late.warning(key, "a store past its deadline failed sop=%s: %s", sop, said)
            return
        log.warning("a store past its deadline finished: the instance is stored sop=%s", sop)


class DatabaseWaits:
    """Calls of an association's handlers into the database other than a store's, each waited
    for as long as a store is (`node.store_timeout_seconds`): past it TimeoutError, and the
    handler answers what it can without them."""

    def __init__(self, threads: int, seconds: float) -> None:
        self.seconds = seconds
        self._threads = DaemonThreads(threads, "database-wait")
        self._told = ThrottledWarnings(log)

    def __call__(self, call: Callable[[], T]) -> T:
        return self._threads.call_within(call, self.seconds)

    def tell(
        self,
        exc: Exception,
        key: Hashable,
        message: str,
        *args: object,
        waited_for: str = "the database",
    ) -> None:
        """Log `message` with why a call gave no answer (`why`), once a minute per `key` (a
        caller asks again and again while the database is away); a bug's error is raised
        again, for pynetdicom to answer 0x0110 and log with its traceback."""
        said = self.why(exc, waited_for)
        if said is None:
            raise exc
        self._told.warning(key, f"{message}: %s", *args, said)

    def why(self, exc: BaseException, waited_for: str = "the database") -> str | None:
        """What a call's failure says for the log and the caller: the wait for `waited_for`
        (what the call asks: "the database", "the database or the spool") ran out, or the
        database failed in a way that passes (`database_away`); None for any other error, a
        bug's, which the handler lets pynetdicom answer (0x0110) and log with its traceback."""
        if isinstance(exc, TimeoutError):
            limit = f"{self.seconds:g} s (node.store_timeout_seconds)"
            return f"{waited_for} did not answer within {limit}"
        return database_away(exc)
