"""Which failures an attempt's outcome is written through (pipeline/outage.py)."""

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from dicomnode.db.failures import database_away
from dicomnode.pipeline.outage import through_outage


def _failing(error: Exception, calls: list[int], succeed_after: int = 10**6) -> Callable[[], str]:
    def write() -> str:
        calls.append(1)
        if len(calls) <= succeed_after:
            raise error
        return "written"

    return write


def _locked() -> sqlite3.OperationalError:
    """SQLite's SQLITE_BUSY, as the driver raises it (with its result code)."""
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = 5  # type: ignore[attr-defined]
    return error


def test_the_database_failing_is_tried_again_until_it_answers() -> None:
    calls: list[int] = []
    locked = _locked()
    assert through_outage("x", 1, _failing(locked, calls, succeed_after=2), 10) == "written"
    assert len(calls) == 3


def test_another_error_is_raised_at_once() -> None:
    calls: list[int] = []
    with pytest.raises(ValueError, match="a bug"):
        through_outage("x", 1, _failing(ValueError("a bug"), calls), 10)
    assert len(calls) == 1


def test_the_database_failing_past_the_patience_is_raised() -> None:
    calls: list[int] = []
    locked = _locked()
    with pytest.raises(sqlite3.OperationalError):
        through_outage("x", 1, _failing(locked, calls), patience=1)
    assert len(calls) == 2  # at 0 s and 0.5 s; the next (1.5 s) would be past the patience


def test_a_write_the_database_refuses_for_good_is_raised_at_once() -> None:
    """A constraint or a bad statement fails the same way again: not an outage."""
    calls: list[int] = []
    refused = IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    with pytest.raises(IntegrityError):
        through_outage("x", 1, _failing(refused, calls), patience=10)
    assert len(calls) == 1


def test_a_stopping_node_waits_out_no_outage() -> None:
    calls: list[int] = []
    stopping = threading.Event()
    stopping.set()
    locked = _locked()
    with pytest.raises(sqlite3.OperationalError):
        through_outage("x", 1, _failing(locked, calls), patience=60, stopping=stopping)
    assert len(calls) == 1


def test_sqlite_locked_is_an_outage_a_bad_statement_is_not(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(tmp_path / "n.db", timeout=0.1, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as locked:
        waiter.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as bad:
        waiter.execute("SELECT nosuch FROM t")
    holder.close()
    waiter.close()
    assert database_away(locked.value) == "database is locked"
    assert database_away(bad.value) is None  # an OperationalError too, but the same again
