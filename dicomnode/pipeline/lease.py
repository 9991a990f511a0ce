"""Keeps a claimed job's lease fresh while a worker is busy with it."""

import logging
import threading
from types import TracebackType

from dicomnode.db import Database
from dicomnode.db.failures import log_failure
from dicomnode.db.jobs import renew_lease

log = logging.getLogger(__name__)

_keeping: set["LeaseKeeper"] = set()  # this process's keepers that are renewing
_keeping_lock = threading.Lock()


def renew_every_lease_now() -> None:
    """Renew every lease this process keeps, at once: after the clock stepped forward, a lease
    renewed on schedule may look lapsed to a reaper reading the new time (on SQLite, whose
    clock is this host's), and the job would be taken from its live worker and run again."""
    with _keeping_lock:
        keepers = list(_keeping)
    for keeper in keepers:
        keeper.renew(say_lost=False)  # its job may just have ended; its own thread will say


class LeaseKeeper:
    """Renews the lease every third of its length until `stop()` (or the `with` block ends).

    If the worker dies, renewals stop and the lease lapses, so another worker (or this node after
    a restart) reclaims the job; that is the whole crash-recovery story for jobs.
    """

    def __init__(self, db: Database, job_id: int, owner: str, lease_seconds: float) -> None:
        self._db, self._job_id, self._owner = db, job_id, owner
        self._lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True)

    def start(self) -> "LeaseKeeper":
        with _keeping_lock:
            _keeping.add(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (idempotent); the caller has finished or given up the job."""
        with _keeping_lock:
            _keeping.discard(self)
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "LeaseKeeper":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def renew(self, say_lost: bool = True) -> bool:
        """Renew now; False when the job is no longer held. With `say_lost` (the keeper's own
        thread) it then says so and stops."""
        if self._stop.is_set():
            return False
        try:
            if renew_lease(self._db, self._job_id, self._owner, self._lease_seconds):
                return True
        except Exception as exc:
            log_failure(log, exc, "lease renewal failed job=%d", self._job_id)
            return True  # the next renewal may succeed
        if self._stop.is_set() or not say_lost:  # the job ended meanwhile, or another says so
            return False
        log.warning("job no longer held (cancelled or reclaimed) job=%d", self._job_id)
        self.stop()  # from its own thread: no join
        return False

    def _renew(self) -> None:
        while not self._stop.wait(self._lease_seconds / 3):
            if not self.renew():
                return
