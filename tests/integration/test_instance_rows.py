"""The receiver's rows on SQLite, written through the driver, are the rows SQLAlchemy writes
(on a real SQLite file): the same values, times the ORM reads and compares as its own, and a
failed transaction leaves nothing behind."""

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from dicomnode.db import Database, ReceivedInstance, open_database
from dicomnode.db.instance_rows import write_rows, write_sqlite_rows
from dicomnode.db.instances import record_instances
from dicomnode.db.models import Instance

SQLITE_TRANSACTION = 22  # the authorizer's action code for BEGIN, COMMIT, ROLLBACK
NOW = datetime(2026, 1, 2, 3, 4, 5)  # no microseconds: the ORM writes them anyway


def _items(suffix: str) -> list[ReceivedInstance]:
    return [
        ReceivedInstance(
            f"1.2.3.{suffix}.{n}",
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.3",
            f"1.2.3.{n % 2}",
            "CT",
            Path(f"/spool/1.2.3/{n % 2}/{n}.dcm"),
            1000 + n,
            "MODALITY",
        )
        for n in range(3)
    ]


def _contents(db: Database) -> list[tuple[object, ...]]:
    """The three tables as SQLite stores them (times as text, not as the ORM reads them)."""
    with db.engine.connect() as connection:
        return [
            tuple(row)
            for table, key in (("instances", "sop_instance_uid"), ("series", "series_uid"))
            for row in connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")
        ] + [tuple(row) for row in connection.exec_driver_sql("SELECT * FROM studies")]


@pytest.fixture
def sqlite_db(db: Database) -> Database:
    if not db.is_sqlite:
        pytest.skip("the driver's path is SQLite's")
    return db


def test_the_driver_writes_the_rows_sqlalchemy_writes(sqlite_db: Database, tmp_path: Path) -> None:
    other = open_database(f"sqlite:///{tmp_path / 'through-sqlalchemy.sqlite'}")
    try:
        moved = write_sqlite_rows(sqlite_db, _items("a"), NOW)
        with other.engine.begin() as connection:
            expected_moved = write_rows(connection, _items("a"), NOW)
        assert moved == expected_moved == [None, None, None]
        assert _contents(sqlite_db) == _contents(other)
    finally:
        other.dispose()
    with sqlite_db.session() as session:
        times = session.scalars(select(Instance.received_at)).all()
    assert times == [NOW] * 3  # as the ORM reads its own


def test_a_row_filed_again_elsewhere_reports_its_old_path(sqlite_db: Database) -> None:
    first = _items("b")[0]
    write_sqlite_rows(sqlite_db, [first], NOW)
    again = ReceivedInstance(**{**vars(first), "path": Path("/spool/elsewhere.dcm")})
    assert write_sqlite_rows(sqlite_db, [again], NOW) == [first.path]
    assert write_sqlite_rows(sqlite_db, [again], NOW) == [None]  # the same place: nothing moved


def test_a_failed_transaction_leaves_nothing_and_the_writer_goes_on(sqlite_db: Database) -> None:

    def fail() -> None:
        raise OSError("fsync failed")

    with pytest.raises(OSError, match="fsync failed"):
        write_sqlite_rows(sqlite_db, _items("c"), NOW, before_commit=fail)
    assert _contents(sqlite_db) == []
    write_sqlite_rows(sqlite_db, _items("c"), NOW)
    with sqlite_db.session() as session:
        assert len(session.scalars(select(Instance)).all()) == 3
    # The ORM's later rows compare with the driver's (the completion rule's quiet test).
    record_instances(sqlite_db, _items("d"))
    with sqlite_db.session() as session:
        earlier = session.scalars(select(Instance).where(Instance.received_at <= NOW)).all()
    assert {i.sop_instance_uid for i in earlier} == {i.sop_instance_uid for i in _items("c")}


def test_the_writers_connection_is_as_durable_as_every_other(sqlite_db: Database) -> None:
    used: list[Any] = []
    event.listen(sqlite_db.engine, "checkout", lambda dbapi, _record, _proxy: used.append(dbapi))
    write_sqlite_rows(sqlite_db, _items("e"), NOW)
    assert len(used) == 1  # one connection from the engine's pool, configured as every other
    driver = used[0]
    assert driver.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: what Success waits for
    assert driver.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert driver.execute("PRAGMA busy_timeout").fetchone() == (30000,)
    # the WAL is cut back after a checkpoint, not kept at its largest burst's size for months
    assert driver.execute("PRAGMA journal_size_limit").fetchone() == (64 * 1024 * 1024,)
    assert not driver.in_transaction  # committed, not left open


def test_a_failed_rollback_leaves_the_first_error_and_the_next_write_works(
    sqlite_db: Database,
) -> None:

    def no_rollback(action: int, operation: str | None, *_: object) -> int:
        refused = action == SQLITE_TRANSACTION and operation == "ROLLBACK"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    def broken(dbapi: sqlite3.Connection, _record: object, _proxy: object) -> None:
        dbapi.set_authorizer(no_rollback)

    def fail() -> None:
        raise OSError("fsync failed")

    event.listen(sqlite_db.engine, "checkout", broken)
    with pytest.raises(OSError, match="fsync failed"):  # not the rollback's "not authorized"
        write_sqlite_rows(sqlite_db, _items("f"), NOW, before_commit=fail)
    event.remove(sqlite_db.engine, "checkout", broken)
    write_sqlite_rows(sqlite_db, _items("g"), NOW)  # the broken connection is not used again
    with sqlite_db.session() as session:
        stored = set(session.scalars(select(Instance.sop_instance_uid)))
    assert stored == {item.sop_instance_uid for item in _items("g")}
