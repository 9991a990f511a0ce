"""A destination that is back: the failed jobs waiting for it go at once.

Each failed job finds out at its own next attempt, up to `retry.max_delay_seconds` (an hour)
after the PACS came back. So every `retry.probe_seconds`, each destination that failed jobs
wait for is asked (C-ECHO) whether it answers; when it answers after it did not (or at the
first probe after a start), its failed jobs are due now. A destination that answers the echo
but refuses what is sent (out of disk) brings them forward once, not at every probe: their
retries keep their backoff, so they last as long as before. A PACS that comes and goes brings
them forward at most once per `retry.max_delay_seconds`.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

from dicomnode.config import Destination, Settings
from dicomnode.db import Database
from dicomnode.db.failed_deliveries import bring_failed_forward, destinations_waited_for
from dicomnode.errors import DicomNodeError, ForwardError
from dicomnode.forward.echo import echo

log = logging.getLogger(__name__)


@dataclass
class RecoveryWatch:
    """What the last probe of each destination said, and when its jobs were last brought
    forward; pure, so the rule is tested as a table."""

    min_interval_seconds: float
    _answered: dict[str, bool] = field(default_factory=dict)
    _brought: dict[str, float] = field(default_factory=dict)

    def is_back(self, name: str, answered: bool | None, now: float) -> bool:
        """Whether `name`'s failed jobs go now, after a probe that `answered` (None: it could
        not tell, e.g. the peer takes no C-ECHO) at monotonic time `now`."""
        if answered is None:
            return False
        before = self._answered.get(name)
        self._answered[name] = answered
        if not answered or before is True:
            return False
        last = self._brought.get(name)
        if last is not None and now - last < self.min_interval_seconds:
            return False
        self._brought[name] = now
        return True


def answers(destination: Destination, settings: Settings) -> bool | None:
    """True when the destination answers a C-ECHO (whatever its status), False when it cannot
    be reached (refused, timed out, rejected for now), None when the probe cannot tell."""
    try:
        echo(destination, settings)
    except ForwardError as exc:
        return False if exc.transient else None
    except DicomNodeError:  # a TLS file it cannot use: the deliveries will say so
        return None
    return True


def probe_destinations(
    settings: Settings, db: Database, watch: RecoveryWatch, stopping: threading.Event
) -> None:
    """The recovery tick: ask each destination failed jobs wait for; bring forward the jobs of
    those that are back."""
    for name in sorted(destinations_waited_for(db)):
        destination = settings.destination(name)
        if destination is None or stopping.is_set():
            continue
        if not watch.is_back(name, answers(destination, settings), time.monotonic()):
            continue
        count = bring_failed_forward(db, name)
        if count:
            log.info(
                "destination answers: its failed jobs are due now destination=%s jobs=%d",
                name,
                count,
            )
