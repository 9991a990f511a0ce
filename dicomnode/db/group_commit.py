"""Instance rows that arrive together, committed together (SQLite).

SQLite has one writer at a time and every commit waits for its fsync. With several associations
storing at once, each row waited for the transaction before it and then paid for its own: with
four senders the receiving threads spent ~13 % of their time waiting for their turn and ~26 %
in their own statements and commit. Here the thread whose turn it is writes every row waiting
by then in one transaction; the others find theirs committed, or failed, when their turn comes.
A row is still only reported recorded once its transaction has committed. The transactions
go through SQLite's own driver (`db/instance_rows.py`: a fifth of SQLAlchemy's CPU per row).
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicomnode.db.engine import Database
from dicomnode.db.instance_rows import write_sqlite_rows
from dicomnode.db.models import utcnow
from dicomnode.db.records import KeptOut, ReceivedInstance


class RowNotRecorded(Exception):
    """The transaction that carried this row failed (the cause is the database's error)."""


@dataclass
class _Ticket:
    item: ReceivedInstance
    before_commit: Callable[[], object] | None
    done: bool = False
    moved: Path | KeptOut | None = None
    error: BaseException | None = None


class GroupCommit:
    """`record_instance` for many threads of one process, sharing transactions (SQLite)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._turn = threading.Lock()
        self._waiting: list[_Ticket] = []
        self._waiting_lock = threading.Lock()

    def record(
        self, item: ReceivedInstance, before_commit: Callable[[], object] | None = None
    ) -> Path | KeptOut | None:
        """As `db.instances.record_instance`: `before_commit` runs inside the transaction that
        carries the row (perhaps in another thread); the old path if the instance moved."""
        ticket = _Ticket(item, before_commit)
        with self._waiting_lock:
            self._waiting.append(ticket)
        with self._turn:
            if not ticket.done:
                self._commit_waiting()
        if ticket.error is not None:
            raise RowNotRecorded(f"instance row not recorded: {ticket.error}") from ticket.error
        if not ticket.done:  # never: every batch ends each of its tickets; never Success on it
            raise RowNotRecorded("instance row not recorded: its transaction never ended")
        return ticket.moved

    def _commit_waiting(self) -> None:
        with self._waiting_lock:
            batch, self._waiting = self._waiting, []

        def before_commit() -> None:
            for ticket in batch:
                if ticket.before_commit is not None:
                    ticket.before_commit()

        try:
            # SQLite's clock is this host's (db/clock.py)
            moved = write_sqlite_rows(self._db, [t.item for t in batch], utcnow(), before_commit)
        except BaseException as exc:  # every row of the transaction fails with it
            for ticket in batch:
                ticket.error = exc
                ticket.done = True
            if not isinstance(exc, Exception):
                raise  # SystemExit and the like go on, in the thread that met them
            return
        for ticket, path in zip(batch, moved, strict=True):
            ticket.moved = path
            ticket.done = True
