"""The node's interval ticks (`node._every`) on a real APScheduler: a run that comes late still
runs, once, and says nothing (the scheduler's thread held up: a busy start, a paused process)."""

import logging
import threading
import time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from dicomnode.node import _every


def test_a_late_tick_runs_once_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[float] = []
    ran = threading.Event()

    def tick() -> None:
        runs.append(time.monotonic())
        ran.set()

    scheduler = BackgroundScheduler()
    scheduler.start(paused=True)
    try:
        with caplog.at_level(logging.WARNING, logger="apscheduler"):
            scheduler.add_job(tick, seconds=60, **_every("retention"))
            time.sleep(1.6)  # its first run, due at once, is 1.6 s late
            scheduler.resume()
            assert ran.wait(5)  # APScheduler's default dropped it, till a round later
            time.sleep(0.2)
    finally:
        scheduler.shutdown()
    assert len(runs) == 1
    assert not [r for r in caplog.records if "missed" in r.getMessage()]


def test_a_tick_is_named_in_the_schedulers_own_lines() -> None:
    scheduler = BackgroundScheduler()
    job = scheduler.add_job(lambda: None, seconds=60, **_every("retention"))
    assert (job.id, job.name) == ("retention", "retention")
