"""An instance's row as the receive path writes it: the statements, and the two ways to run them.

The receiver writes one row per instance while the sender waits for its answer, so these are
plain SQL (INSERT ... ON CONFLICT, the same text on SQLite >= 3.24 and PostgreSQL): less than
half the time of the ORM. They must stay in step with the tables in models.py.

On SQLite the receiver runs them through the driver's cursor, on a connection from the engine's
pool (`write_sqlite_rows`). Through SQLAlchemy's connection, transaction and statement layers a row
cost ~270 us of interpreter time, ~55 us without them: most of it inside SQLite's write lock,
which the rows of every receiving process take one at a time, while the process's other threads
wait for the interpreter lock. With four senders the node stored 451 instances/s instead of 353
(README, Benchmarks). Everything else (PostgreSQL, the doctor) runs the same statements through
SQLAlchemy (`write_rows`).
"""

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, bindparam, text

from dicomnode.db.engine import Database
from dicomnode.db.records import KeptOut, ReceivedInstance

PREVIOUS_COPY = (
    "SELECT path, series_uid, calling_aet FROM instances WHERE sop_instance_uid = :sop_instance_uid"
)
UPSERTS = (
    "INSERT INTO studies (study_uid, first_received_at, last_received_at)"
    " VALUES (:study_uid, :now, :now)"
    " ON CONFLICT (study_uid) DO UPDATE SET last_received_at = excluded.last_received_at",
    "INSERT INTO series (series_uid, study_uid, modality, first_received_at, last_received_at,"
    " pending) VALUES (:series_uid, :study_uid, :modality, :now, :now, true)"
    " ON CONFLICT (series_uid) DO UPDATE SET last_received_at = excluded.last_received_at,"
    " pending = true",
    "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid,"
    " transfer_syntax_uid, path, size_bytes, calling_aet, received_at)"
    " VALUES (:sop_instance_uid, :series_uid, :study_uid, :sop_class_uid, :transfer_syntax_uid,"
    " :path, :size_bytes, :calling_aet, :now)"
    " ON CONFLICT (sop_instance_uid) DO UPDATE SET series_uid = excluded.series_uid,"
    " study_uid = excluded.study_uid, sop_class_uid = excluded.sop_class_uid,"
    " transfer_syntax_uid = excluded.transfer_syntax_uid, path = excluded.path,"
    " size_bytes = excluded.size_bytes, calling_aet = excluded.calling_aet,"
    " received_at = excluded.received_at",
)
_PREVIOUS_COPY_CLAUSE = text(PREVIOUS_COPY)
# `now` bound as the ORM binds its DateTime columns: stored as the ORM stores its own times.
_UPSERT_CLAUSES = tuple(text(s).bindparams(bindparam("now", type_=DateTime)) for s in UPSERTS)

# How SQLAlchemy's DateTime stores a time in SQLite (always with microseconds): the rows the
# driver writes compare with the ORM's, as text, as the same kind of value.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _values(item: ReceivedInstance, now: object) -> dict[str, Any]:
    return {
        "sop_instance_uid": item.sop_instance_uid,
        "sop_class_uid": item.sop_class_uid,
        "transfer_syntax_uid": item.transfer_syntax_uid,
        "study_uid": item.study_uid,
        "series_uid": item.series_uid,
        "modality": item.modality,
        "path": str(item.path),
        "size_bytes": item.size_bytes,
        "calling_aet": item.calling_aet,
        "now": now,
    }


def _previous(
    found: Sequence[Any] | None, item: ReceivedInstance
) -> tuple[Path | KeptOut | None, bool]:
    """What a copy recorded before means for `item`: (its old path, when that copy was filed
    elsewhere, or KeptOut, or None; whether to write the row)."""
    if found is None:
        return None, True
    path, series_uid, calling_aet = found
    kept = kept_out((series_uid, calling_aet), item.series_uid, item.calling_aet)
    if kept is not None and not item.replaces_foreign:
        return kept, False
    return (Path(path) if path != str(item.path) else None), True


def kept_out(stored: Sequence[Any], series_uid: str, calling_aet: str) -> KeptOut | None:
    """The stored copy's (series, calling AE) as KeptOut when another sender than
    `calling_aet` filed it in another series than `series_uid`: a copy that replaces it only
    with on_duplicate "replace"."""
    stored_series, stored_calling = stored
    if stored_series != series_uid and stored_calling != calling_aet:
        return KeptOut(stored_series, stored_calling)
    return None


def write_rows(
    connection: Connection, items: Sequence[ReceivedInstance], now: datetime
) -> list[Path | KeptOut | None]:
    """The rows, in a transaction the caller holds (SQLAlchemy); of each, the old path when a
    copy was filed elsewhere before, or KeptOut when it was not written (`_previous`)."""
    moved = []
    for item in items:
        values = _values(item, now)
        found = connection.execute(_PREVIOUS_COPY_CLAUSE, values).first()
        previous, write = _previous(found, item)
        for clause in _UPSERT_CLAUSES if write else ():
            connection.execute(clause, values)
        moved.append(previous)
    return moved


def write_sqlite_rows(
    db: Database,
    items: Sequence[ReceivedInstance],
    now: datetime,
    before_commit: Callable[[], object] | None = None,
) -> list[Path | KeptOut | None]:
    """As `db.instances.record_instances` on SQLite, in one BEGIN IMMEDIATE ... COMMIT through
    the driver's cursor, on a connection from the engine's pool (configured as every other: WAL,
    synchronous=FULL, busy timeout, foreign keys; engine.py), given back after the call.
    Writers in several threads or processes queue on SQLite's write lock; `GroupCommit` batches
    those of a process."""
    rows = [_values(item, now.strftime(SQLITE_TIME_FORMAT)) for item in items]
    connection = db.engine.raw_connection()
    try:
        driver: sqlite3.Connection = connection.driver_connection  # type: ignore[assignment]
        with closing(driver.cursor()) as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                moved = []
                for item, values in zip(items, rows, strict=True):
                    found = cursor.execute(PREVIOUS_COPY, values).fetchone()
                    previous, write = _previous(found, item)
                    for statement in UPSERTS if write else ():
                        cursor.execute(statement, values)
                    moved.append(previous)
                if before_commit is not None:
                    before_commit()
                cursor.execute("COMMIT")
            except BaseException:
                # The error that matters is the first: a rollback that fails too leaves the
                # transaction to the pool's own, and a connection that cannot is dropped.
                with suppress(sqlite3.Error):
                    driver.execute("ROLLBACK")
                raise
    finally:
        connection.close()  # back to the pool, which rolls back what is left, or drops it
    return moved
