"""Noticing that the system clock stepped, which would otherwise stall the node's periodic work.

APScheduler plans every tick by the wall clock. When the clock steps back (a virtual machine
resumed from a snapshot, NTP correcting a clock that ran far ahead), each tick waits out the
step: an hour back, and for an hour the node stores what arrives but makes no jobs, sends
nothing and reaps no lease. A thread on the monotonic clock notices a step and runs every tick
now, from which they go on at their intervals; its log line tells an operator why the times in
the log jump.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler

log = logging.getLogger(__name__)

CHECK_SECONDS = 5.0
# A step, not a slew: NTP slews the clock by at most 0.5 ms a second (2.5 ms between checks).
STEP_SECONDS = 10.0


class ClockStepWatch:
    """Calls `on_step(seconds)` (positive: the clock went forward) when the wall clock moves
    against the monotonic one by STEP_SECONDS or more between two checks."""

    def __init__(
        self,
        on_step: Callable[[float], None],
        *,
        check_seconds: float = CHECK_SECONDS,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_step = on_step
        self._check_seconds = check_seconds
        self._wall, self._monotonic = wall, monotonic
        self._offset = wall() - monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-step-watch", daemon=True)

    def check(self) -> float | None:
        """The step since the last check, in seconds; None when the clocks kept in step."""
        offset = self._wall() - self._monotonic()
        step, self._offset = offset - self._offset, offset
        return step if abs(step) >= STEP_SECONDS else None

    def start(self) -> "ClockStepWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._check_seconds):
            step = self.check()
            if step is None:
                continue
            log.warning(
                "system clock stepped %+.0f s; the node's periodic work runs now and goes on "
                "from the new time",
                step,
            )
            try:
                self._on_step(step)
            except Exception:  # the watch goes on; the ticks still come, if late
                log.exception("could not bring the periodic work forward after the clock step")


def run_every_tick_now(scheduler: BaseScheduler, later: Mapping[str, float] | None = None) -> None:
    """Run each of the scheduler's jobs now, or those named in `later` that many seconds from
    now: after the clock stepped back, their next run lies as far ahead as the step. They go on
    at their intervals from this run."""
    now = datetime.now(UTC)
    for job in scheduler.get_jobs():
        if job.next_run_time is not None:  # a paused job stays paused
            job.modify(next_run_time=now + timedelta(seconds=(later or {}).get(job.id, 0.0)))
