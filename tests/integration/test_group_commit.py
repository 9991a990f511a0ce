"""Rows stored by several receiving threads at once share transactions, and a failed
transaction fails each of its rows (on a real SQLite file, the receiver's default)."""

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import distinct, func, select

from dicomnode.db import Database, ReceivedInstance
from dicomnode.db.group_commit import GroupCommit, RowNotRecorded
from dicomnode.db.models import Instance

THREADS = 8


@pytest.fixture(autouse=True)
def _sqlite_only(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("the receiver groups commits on SQLite only")


def _row(series_uid: str) -> ReceivedInstance:
    uid = generate_uid()
    return ReceivedInstance(
        uid,
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.3",
        series_uid,
        "CT",
        Path(f"/spool/{uid}.dcm"),
        1000,
        "MODALITY",
    )


def _at_once(calls: list[Callable[[], object]]) -> list[BaseException | None]:
    """Run the calls in threads released together; each one's exception, or None."""
    start = threading.Barrier(len(calls))
    outcomes: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        start.wait()
        try:
            calls[index]()
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _rows_in(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_rows_waiting_together_are_committed_in_one_transaction(db: Database) -> None:
    rows = GroupCommit(db)
    slow_first = threading.Lock()

    def hold_the_first_transaction() -> None:
        if slow_first.acquire(blocking=False):  # the first transaction: the rest queue up
            time.sleep(0.3)

    calls = [
        lambda: rows.record(_row("1.2.3.4"), before_commit=hold_the_first_transaction)
        for _ in range(THREADS)
    ]
    assert _at_once(calls) == [None] * THREADS
    assert _rows_in(db) == THREADS
    # The rows of one transaction share its time: the first thread's row, then everyone who
    # waited meanwhile.
    with db.session() as session:
        transactions = session.scalar(select(func.count(distinct(Instance.received_at))))
    assert transactions <= 2


def test_a_failed_transaction_fails_each_of_its_rows_and_the_next_ones_are_recorded(
    db: Database,
) -> None:
    rows = GroupCommit(db)

    def fail() -> None:
        raise OSError("fsync failed")

    outcomes = _at_once([lambda: rows.record(_row("1.2.3.5"), before_commit=fail)] * 3)

    assert all(isinstance(o, RowNotRecorded) and "fsync failed" in str(o) for o in outcomes)
    assert _rows_in(db) == 0
    rows.record(_row("1.2.3.5"))
    assert _rows_in(db) == 1


class _Stop(BaseException):
    """Not an Exception: what a thread that is told to end meets (SystemExit and the like)."""


def test_rows_in_a_transaction_ended_by_a_base_exception_are_not_taken_for_recorded(
    db: Database,
) -> None:
    rows = GroupCommit(db)
    holding = threading.Event()

    def hold() -> None:
        holding.set()
        time.sleep(0.3)  # the next two rows queue up meanwhile, for one transaction

    def stop() -> None:
        raise _Stop

    first = threading.Thread(target=lambda: rows.record(_row("1.2.3.6"), before_commit=hold))
    first.start()
    holding.wait(5)
    outcomes = _at_once([lambda: rows.record(_row("1.2.3.6"), before_commit=stop)] * 2)
    first.join(5)

    assert sorted(type(o).__name__ for o in outcomes) == ["RowNotRecorded", "_Stop"]
    assert _rows_in(db) == 1  # the first row only
