"""A step of the system clock is noticed, and the periodic work does not wait it out."""

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from dicomnode.clock_step import ClockStepWatch, run_every_tick_now


class FakeClocks:
    def __init__(self) -> None:
        self.wall_offset = 0.0
        self.mono = 1000.0

    def wall(self) -> float:
        return 1_700_000_000.0 + self.mono + self.wall_offset

    def monotonic(self) -> float:
        return self.mono


def test_a_step_is_told_from_a_slew() -> None:
    clocks = FakeClocks()
    watch = ClockStepWatch(lambda _: None, wall=clocks.wall, monotonic=clocks.monotonic)
    clocks.mono += 5
    clocks.wall_offset += 0.003  # NTP slewing
    assert watch.check() is None
    clocks.wall_offset -= 3600  # a virtual machine resumed from an hour-old snapshot
    assert watch.check() == pytest.approx(-3600, abs=0.01)
    assert watch.check() is None  # told once
    clocks.wall_offset += 86400
    assert watch.check() == pytest.approx(86400)


def test_the_watch_calls_back_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clocks = FakeClocks()
    told: list[float] = []
    called = threading.Event()

    def on_step(seconds: float) -> None:
        told.append(seconds)
        called.set()

    watch = ClockStepWatch(
        on_step, check_seconds=0.01, wall=clocks.wall, monotonic=clocks.monotonic
    ).start()
    try:
        with caplog.at_level(logging.WARNING, "dicomnode.clock_step"):
            clocks.wall_offset -= 3600
            assert called.wait(5)
    finally:
        watch.stop()
    assert told == [pytest.approx(-3600)]
    assert "system clock stepped -3600 s" in caplog.text


def test_every_tick_runs_now_instead_of_waiting_out_a_step_back() -> None:
    ran = threading.Event()
    scheduler = BackgroundScheduler(timezone=UTC)
    an_hour_ahead = datetime.now(UTC) + timedelta(hours=1)  # where a step back leaves it
    scheduler.add_job(ran.set, "interval", seconds=3600, next_run_time=an_hour_ahead, id="tick")
    scheduler.add_job(ran.set, "interval", seconds=1, id="paused").pause()
    scheduler.start()
    try:
        assert not ran.wait(0.2)
        run_every_tick_now(scheduler)
        assert ran.wait(5)
        time.sleep(0.1)
        tick = scheduler.get_job("tick")
        assert tick is not None and tick.next_run_time is not None
        assert tick.next_run_time - datetime.now(UTC) > timedelta(minutes=59)  # its interval on
        paused = scheduler.get_job("paused")
        assert paused is not None and paused.next_run_time is None
        run_every_tick_now(scheduler, later={"tick": 600})  # the reaper, after renewals
        tick = scheduler.get_job("tick")
        assert tick is not None and tick.next_run_time is not None
        assert (
            timedelta(seconds=590)
            < tick.next_run_time - datetime.now(UTC)
            <= timedelta(seconds=600)
        )
    finally:
        scheduler.shutdown(wait=True)
