"""A store waited for until its deadline (`receive/store_deadline.py`): its own error comes
back, a store that hangs is told at the deadline and finishes behind, and one that could not
even begin is never run."""

import logging
import sqlite3
import threading
import weakref
from functools import partial

import pytest
from sqlalchemy.exc import OperationalError

from dicomnode.db.failures import database_away
from dicomnode.errors import StoreTimedOut
from dicomnode.receive.store_deadline import (
    BYTES_PER_EXTRA_SECOND,
    DaemonThreads,
    DatabaseWaits,
    StoreDeadline,
)


def test_a_store_that_ends_in_time_returns_or_raises_its_own_error() -> None:
    deadline = StoreDeadline(threads=2, seconds=5)
    done: list[int] = []
    deadline.run(lambda: done.append(1), 100, "1.2.3")
    assert done == [1]

    def fails() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        deadline.run(fails, 100, "1.2.3")


def test_a_store_that_hangs_is_told_at_its_deadline_and_finishes_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadline = StoreDeadline(threads=1, seconds=0.2)
    frozen, finished = threading.Event(), threading.Event()

    def hangs() -> None:
        frozen.wait(10)
        finished.set()

    with pytest.raises(StoreTimedOut, match=r"did not finish storing it within 0 s"):
        deadline.run(hangs, 100, "1.2.3.4")
    # Its only thread is held: the next store cannot begin, is told so, and never runs.
    ran: list[int] = []
    with pytest.raises(StoreTimedOut, match="no store could begin"):
        deadline.run(lambda: ran.append(1), 100, "1.2.3.5")
    with caplog.at_level(logging.WARNING, logger="dicomnode.receive.store_deadline"):
        frozen.set()
        assert finished.wait(5)
        deadline.run(lambda: ran.append(2), 100, "1.2.3.6")  # the thread is free again
    assert ran == [2]
    assert "a store past its deadline finished: the instance is stored sop=1.2.3.4" in caplog.text


def test_a_large_instance_gets_more_time() -> None:
    deadline = StoreDeadline(threads=1, seconds=60)
    assert deadline.deadline_for(0) == 60
    assert deadline.deadline_for(20 * BYTES_PER_EXTRA_SECOND) == 80


class _DataSet(bytearray):
    """A received data set's bytes (a bytearray cannot be weakly referenced)."""


def test_a_store_cancelled_before_it_began_lets_go_of_its_data_at_once() -> None:
    """During a freeze every refused store stayed queued, each with its whole data set,
    until a thread was free to drop it."""
    threads = DaemonThreads(1, "test")
    frozen = threading.Event()
    held = threads.submit(lambda: frozen.wait(10))
    data = _DataSet(10 << 20)
    alive = weakref.ref(data)
    waiting = threads.submit(partial(len, data))
    del data
    assert waiting.cancel() and waiting.call is None
    assert alive() is None
    frozen.set()
    assert held.future.result(5) is True
    assert threads.submit(lambda: 7).future.result(5) == 7  # the cancelled one never ran


def test_a_late_failure_is_told_in_the_words_given(caplog: pytest.LogCaptureFixture) -> None:
    deadline = StoreDeadline(threads=1, seconds=0.1, describe=lambda exc: "disk gone")
    frozen = threading.Event()

    def fails_late() -> None:
        frozen.wait(10)
        raise OSError(5, "Input/output error\n[SQL: many lines]")

    with pytest.raises(StoreTimedOut):
        deadline.run(fails_late, 0, "1.2.3.7")
    with caplog.at_level(logging.WARNING, logger="dicomnode.receive.store_deadline"):
        frozen.set()
        deadline.run(lambda: None, 0, "1.2.3.8")  # after the late one, on the one thread
    assert "a store past its deadline failed sop=1.2.3.7: disk gone" in caplog.text


def test_a_database_wait_returns_the_answer_or_says_why_there_is_none() -> None:
    """`DatabaseWaits`: what a release or a commitment request gets of the database."""
    waits = DatabaseWaits(threads=1, seconds=0.2)
    assert waits(lambda: 42) == 42
    frozen, went_on = threading.Event(), threading.Event()

    def hangs() -> None:
        frozen.wait(10)
        went_on.set()

    with pytest.raises(TimeoutError) as raised:
        waits(hangs)
    assert waits.why(raised.value) == (
        "the database did not answer within 0.2 s (node.store_timeout_seconds)"
    )
    with pytest.raises(TimeoutError):  # the one thread is held: this call never begins
        waits(went_on.set)
    frozen.set()
    assert went_on.wait(5)  # the first went on behind
    locked = OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
    locked.orig.sqlite_errorcode = 5  # type: ignore[union-attr]  # SQLITE_BUSY
    assert waits.why(locked) == database_away(locked) is not None
    assert waits.why(KeyError("a bug")) is None
