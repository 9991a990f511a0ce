"""Scheduled tasks whose failures explain themselves without filling the log.

Every tick of a node (completion, leases, admin log, retention, each runner) is a `Guarded`
task. A bug's failure is logged with its traceback once, the same one again on the 2nd, 4th,
8th, ... time, and the task's recovery with the count. A database that does not answer fails
every task every second: that is one ERROR line for all of them when it fails and one line when
it works again (`DatabaseHealth`), the tasks' own failures meanwhile at DEBUG.
"""

import logging
import threading
import time
from collections.abc import Callable

from dicomnode.db.failures import database_away
from dicomnode.errors import DicomNodeError

log = logging.getLogger("dicomnode.node")

_TOLD_PER_OUTAGE = 8  # a database whose every error differs (a counter in it) says 8, not all
# An outage ends when the tasks have found the database for this long without a failure: on a
# disk turned read-only the ticks that only read succeed between the writers' failures, which
# logged "fails" and "works again after 0 s" 54 times each in 11 s.
BACK_AFTER_SECONDS = 5.0


class DatabaseHealth:
    """Whether the node's scheduled tasks find the database, shared by all of them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._away_since: float | None = None
        self._last_failure = 0.0
        self._failed_runs = 0
        self._told: set[str] = set()  # the failures told in this outage (a few at most)
        self._last_outage: tuple[float, float] | None = None  # its first and last failure

    def away(self, task: str, said: str) -> None:
        with self._lock:
            first = self._away_since is None
            self._last_failure = self._clock()
            if first:
                self._away_since = self._last_failure
            self._failed_runs += 1
            new = said not in self._told and len(self._told) < _TOLD_PER_OUTAGE
            self._told.add(said)
        if first:
            log.error(
                "the database fails (node.database_url): %s; scheduled work waits for it, "
                "stores are answered 0xA700 meanwhile",
                said,
            )
        elif new:  # it fails otherwise now (locked, then its disk full)
            log.error("the database still fails, now: %s", said)
        else:
            log.debug("scheduled task waits for the database task=%s: %s", task, said)

    def outage_within(self, seconds: float, lasting: float) -> bool:
        """Whether the tasks found the database away for `lasting` seconds or more (from its
        first failure to its last) in an outage that ended less than `seconds` ago, or goes
        on. A deadlock or a lock wait now and then, which fails one tick, is not one."""
        with self._lock:
            now = self._clock()
            if self._away_since is not None:
                return self._last_failure - self._away_since >= lasting
            last = self._last_outage
            return last is not None and last[1] - last[0] >= lasting and now - last[1] < seconds

    def answered(self) -> None:
        with self._lock:
            since, runs = self._away_since, self._failed_runs
            if since is None or self._clock() - self._last_failure < BACK_AFTER_SECONDS:
                return  # not away, or not back for long enough to say so
            self._last_outage = (since, self._last_failure)
            self._away_since, self._failed_runs = None, 0
            self._told.clear()
        if since is not None:
            log.warning(
                "the database works again after %.0f s (%d scheduled runs failed meanwhile)",
                self._clock() - since,
                runs,
            )


# What a tick returns when it ran without asking the database (the reaper holding back during
# an outage): its success says nothing of the database, which "works again" would have claimed
# while it was still frozen.
DATABASE_NOT_ASKED = object()


class Guarded:
    """A scheduled task whose failures are logged for an operator (see the module). A task that
    never asks the database gets no `health` of the node's: its success is no news of it."""

    def __init__(
        self, name: str, tick: Callable[[], object], health: DatabaseHealth | None = None
    ) -> None:
        self._name, self._tick = name, tick
        self._health = health or DatabaseHealth()
        self._error: str | None = None
        self._failures = 0

    def __call__(self) -> None:
        try:
            ran = self._tick()
        except Exception as exc:
            said = database_away(exc)  # locked, gone: not a bug of ours (those keep a traceback)
            if said is not None:
                self._health.away(self._name, said)
                return
            error = f"{type(exc).__name__}: {exc}"
            if error != self._error:
                self._error, self._failures = error, 1
                if isinstance(exc, DicomNodeError):  # ours, and it says why: no traceback
                    log.error("scheduled task failed task=%s (will run again): %s", self._name, exc)
                else:
                    log.exception("scheduled task failed task=%s (will run again)", self._name)
                return
            self._failures += 1
            if self._failures & (self._failures - 1) == 0:  # a power of two
                log.error(
                    "scheduled task failed again task=%s times=%d: %s",
                    self._name,
                    self._failures,
                    error,
                )
            return
        if ran is not DATABASE_NOT_ASKED:
            self._health.answered()
        if self._error is not None:
            log.warning("scheduled task ran again task=%s failures=%d", self._name, self._failures)
            self._error, self._failures = None, 0
