"""A scheduled task that fails every tick (a full disk, a database gone) is logged so that the
log explaining it does not fill the disk itself: the first failure with its traceback, the same
one again in one line on the 2nd, 4th, 8th ... time, and its recovery with the count."""

import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from dicomnode.node import _Guarded


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
    task = _Guarded("retention", tick)
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


def test_a_database_failure_is_one_line_in_the_databases_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another process holding SQLite's write lock past the busy timeout is no bug of ours:
    one line each time, no traceback (it was SQLAlchemy's 65 lines per task)."""

    def locked() -> None:
        busy = sqlite3.OperationalError("database is locked")
        busy.sqlite_errorcode = 5  # type: ignore[attr-defined]  # SQLITE_BUSY, as the driver sets
        raise OperationalError("BEGIN IMMEDIATE", {}, busy)

    task = _Guarded("completion", locked)
    caplog.set_level(logging.INFO, logger="dicomnode.node")
    task()
    task()
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        (
            "ERROR",
            "scheduled task failed task=completion (will run again): "
            "the database failed: database is locked",
            False,
        ),
        (
            "ERROR",
            "scheduled task failed again task=completion times=2: "
            "the database failed: database is locked",
            False,
        ),
    ]
