"""An attempt's outcome written through a short database outage.

An attempt writes each delivery's outcome and then its own end once the sending is over. When the
database is away at that moment (PostgreSQL restarting, SQLite locked past its busy timeout),
giving up left the job "forwarding" until its lease lapsed (worker.lease_seconds), then sent the
whole series again, and the interrupted attempt counted as one its worker died in. So such a
write is tried again, for up to half the lease: the lease was renewed at most a third of it ago,
so it still holds when the last try is made; past that, another worker may take the job over.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from dicomnode.db.failures import database_away

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.5
LONGEST_DELAY_SECONDS = 5.0  # a database back is noticed within seconds


def through_outage(
    what: str,
    job_id: int,
    write: Callable[[], T],
    patience: float,
    stopping: threading.Event | None = None,
) -> T:
    """`write()`, tried again while the database is away, for up to `patience` seconds or until
    the node is `stopping`; any other error, or the database's once patience is spent or the
    node stops, is raised (the job then resumes after its lease, as after a crash)."""
    stopping = stopping or threading.Event()
    started = time.monotonic()
    delay = FIRST_DELAY_SECONDS
    failed = False
    while True:
        try:
            result = write()
        except Exception as exc:
            said = database_away(exc)
            if said is None or time.monotonic() - started + delay > patience:
                raise
            if not failed:
                log.warning(
                    "database failed recording %s job=%d, trying again for up to %.0f s: %s",
                    what,
                    job_id,
                    patience,
                    said,
                )
            failed = True
            if stopping.wait(delay):
                raise
            delay = min(delay * 2, LONGEST_DELAY_SECONDS)
            continue
        if failed:
            log.info(
                "%s recorded job=%d once the database answered again (%.0f s)",
                what,
                job_id,
                time.monotonic() - started,
            )
        return result
