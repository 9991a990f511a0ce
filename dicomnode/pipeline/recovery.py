"""A destination that is back: the failed jobs waiting for it go at once.

Each failed job finds out at its own next attempt, up to `retry.max_delay_seconds` (an hour)
after the PACS came back. So every `retry.probe_seconds`, each destination that failed jobs
wait for is asked (C-ECHO, with short timeouts) whether it answers. When it answers after a
probe found it down, the jobs whose delivery there failed by that probe are due now: they
failed while it was down. A job costs at most one attempt per outage seen so, whatever the
number of processes probing (each sees the same outage and the same failure times) and
however often they restart (a first probe that finds it answering brings nothing forward), and
at most one per `retry.max_delay_seconds` for a PACS that comes and goes.
"""

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

from dicomnode.config import Destination, Settings
from dicomnode.db import Database
from dicomnode.db.failed_deliveries import bring_failed_forward, destinations_waited_for
from dicomnode.forward.echo import why_unanswered

log = logging.getLogger(__name__)

# A probe's C-ECHO waits at most this long for each step (connect, association, answer): a
# PACS answers an echo at once, and a hanging one must not hold up the node's stop.
PROBE_TIMEOUT_SECONDS = 5.0


@dataclass
class RecoveryWatch:
    """Per destination, when a probe last found it down, and when its jobs were last brought
    forward; pure (times are the database's), so the rule is tested as a table."""

    min_interval_seconds: float
    _down_at: dict[str, datetime] = field(default_factory=dict)
    _brought_at: dict[str, datetime] = field(default_factory=dict)

    def back_since(self, name: str, answered: bool | None, at: datetime) -> datetime | None:
        """After a probe of `name` at `at` that `answered` (None: it could not tell, e.g. the
        peer takes no C-ECHO): when it was last found down, if it is back now and its jobs
        that failed by then are to go (`brought` once they went); else None."""
        if answered is None:
            return None
        if not answered:
            self._down_at[name] = at
            return None
        down_at = self._down_at.get(name)
        if down_at is None:
            return None
        last = self._brought_at.get(name)
        if last is not None and (at - last).total_seconds() < self.min_interval_seconds:
            del self._down_at[name]  # this outage brings nothing forward
            return None
        return down_at

    def brought(self, name: str, at: datetime) -> None:
        """The jobs of `name` went at `at`: the outage that ended is spent."""
        self._down_at.pop(name, None)
        self._brought_at[name] = at


def _probe_settings(settings: Settings) -> Settings:
    network = settings.network
    short = {
        name: min(getattr(network, name), PROBE_TIMEOUT_SECONDS)
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "connect_timeout")
    }
    return dataclasses.replace(settings, network=dataclasses.replace(network, **short))


def answers(destination: Destination, settings: Settings) -> bool | None:
    """True when the destination answers a C-ECHO, False when it cannot be reached, None when
    the probe cannot tell."""
    why = why_unanswered(destination, _probe_settings(settings))
    if why is None:
        return True
    return False if why.transient else None


def probe_destinations(
    settings: Settings, db: Database, watch: RecoveryWatch, stopping: threading.Event
) -> None:
    """The recovery tick: ask each destination failed jobs wait for; bring forward the jobs
    that failed while it was down, once it is back."""
    at, names = destinations_waited_for(db)
    for name in sorted(names):
        destination = settings.destination(name)
        if stopping.is_set():
            return
        if destination is None:
            continue
        since = watch.back_since(name, answers(destination, settings), at)
        if since is None:
            continue
        count = bring_failed_forward(db, name, failed_by=since)
        watch.brought(name, at)
        if count:
            log.info(
                "destination answers again: its failed jobs are due now destination=%s jobs=%d",
                name,
                count,
            )
