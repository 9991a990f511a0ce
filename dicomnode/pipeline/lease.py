"""Keeps a claimed job's lease fresh while a worker is busy with it."""

import logging
import threading
from types import TracebackType

from dicomnode.db import Database
from dicomnode.db.jobs import renew_lease

log = logging.getLogger(__name__)


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
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (idempotent); the caller has finished or given up the job."""
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

    def _renew(self) -> None:
        while not self._stop.wait(self._lease_seconds / 3):
            try:
                if not renew_lease(self._db, self._job_id, self._owner, self._lease_seconds):
                    log.warning("job no longer held (cancelled or reclaimed) job=%d", self._job_id)
                    return
            except Exception:
                log.exception("lease renewal failed job=%d", self._job_id)
