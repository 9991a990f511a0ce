"""A scheduled task that fails every tick (a full disk, a database gone) is logged so that the
log explaining it does not fill the disk itself: the first failure with its traceback, the same
one again in one line on the 2nd, 4th, 8th ... time, and its recovery with the count."""

import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from dicomnode.guarded import BACK_AFTER_SECONDS, DATABASE_NOT_ASKED, DatabaseHealth, Guarded


class Tick:
    def __init__(self) -> None:
        self.error: str | None = None

    def __call__(self) -> None:
        if self.error is not None:
            raise OSError(self.error)


def test_a_failure_that_repeats_is_logged_ever_more_rarely_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tick = Tick()
    task = Guarded("retention", tick)
    caplog.set_level(logging.INFO, logger="dicomnode.node")
    tick.error = "database or disk is full"
    for _ in range(9):
        task()
    tick.error = "another fault"
    task()
    tick.error = None
    task()
    task()
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        ("ERROR", "scheduled task failed task=retention (will run again)", True),
        *[
            (
                "ERROR",
                f"scheduled task failed again task=retention times={n}: "
                "OSError: database or disk is full",
                False,
            )
            for n in (2, 4, 8)
        ],
        ("ERROR", "scheduled task failed task=retention (will run again)", True),
        ("WARNING", "scheduled task ran again task=retention failures=1", False),
    ]


def test_a_database_away_is_one_line_for_every_task_and_one_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another process holding SQLite's write lock, PostgreSQL restarting: no bug of ours.
    Before, each of five tasks logged SQLAlchemy's 65-line traceback, then its own series of
    lines (46 lines for a 20 s outage)."""
    now = [100.0]
    down = [True]

    def tick() -> None:
        if down[0]:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = 5  # type: ignore[attr-defined]  # SQLITE_BUSY, as the driver sets
            raise OperationalError("BEGIN IMMEDIATE", {}, busy)

    health = DatabaseHealth(clock=lambda: now[0])
    tasks = [Guarded(name, tick, health) for name in ("completion", "w0", "admin-log")]
    caplog.set_level(logging.INFO, logger="dicomnode.node")
    for _ in range(10):
        for task in tasks:
            task()
        now[0] += 2
    down[0] = False
    for _ in range(4):  # back for 6 s: said once, when it has been for BACK_AFTER_SECONDS
        for task in tasks:
            task()
        now[0] += 2
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        (
            "ERROR",
            "the database fails (node.database_url): database is locked; scheduled work waits "
            "for it, stores are answered 0xA700 meanwhile",
            False,
        ),
        (
            "WARNING",
            "the database works again after 24 s (30 scheduled runs failed meanwhile)",
            False,
        ),
    ]


def test_a_database_that_fails_for_writers_only_is_one_outage_not_a_line_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A disk turned read-only: the ticks that only read succeed between the writers'
    failures. Before, each success ended the outage ("works again after 0 s") and the next
    failure began another: 108 lines in 11 s."""
    now = [0.0]
    health = DatabaseHealth(clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="dicomnode.node")
    for _ in range(20):
        health.away("completion", "attempt to write a readonly database")
        now[0] += 0.5
        health.answered()  # the admin-log tick: it only reads
        now[0] += 0.5
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    now[0] += BACK_AFTER_SECONDS
    health.answered()
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]


def test_a_database_that_fails_otherwise_meanwhile_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = DatabaseHealth(clock=lambda: 0.0)
    caplog.set_level(logging.INFO, logger="dicomnode.node")
    for said in ("database is locked", "database or disk is full", "database or disk is full"):
        health.away("completion", said)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "the database still fails, now: database or disk is full"
    ]


def test_the_reaper_can_tell_the_database_was_away_within_a_lease() -> None:
    """No worker can renew its lease while the database is away: the reaper waits a lease
    past an outage of a third of one or more (`node._reclaim_expired_leases`) before it takes
    jobs back; a failed tick now and then (a deadlock, a lock wait) is no such outage."""
    now = [100.0]
    health = DatabaseHealth(clock=lambda: now[0])
    assert not health.outage_within(300, lasting=100)
    health.away("reaper", "deadlock detected")  # one tick, then the database answers
    now[0] += 10
    health.answered()
    assert not health.outage_within(300, lasting=100)
    for _ in range(120):  # away for two minutes
        health.away("reaper", "connection refused")
        now[0] += 1
    assert health.outage_within(300, lasting=100)  # still away
    now[0] += 10
    health.answered()
    now[0] += 280
    assert health.outage_within(300, lasting=100)  # back, within a lease of its end
    now[0] += 20
    assert not health.outage_within(300, lasting=100)


def test_a_tick_that_did_not_ask_the_database_is_no_news_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reaper holds back once an outage has lasted a third of a lease: its run ends well
    without asking the database, which was then said to work again while it was still frozen
    ("works again after 130 s", then "fails" 20 s later)."""
    now = [0.0]
    health = DatabaseHealth(clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="dicomnode.node")
    health.away("completion", "connection timeout expired")
    reaper = Guarded("reclaim-leases", lambda: DATABASE_NOT_ASKED, health)
    for _ in range(10):
        now[0] += 2
        reaper()
    assert [r.getMessage() for r in caplog.records] == [
        "the database fails (node.database_url): connection timeout expired; scheduled work "
        "waits for it, stores are answered 0xA700 meanwhile"
    ]
    assert health.outage_within(60, lasting=0)  # still away
