"""A PostgreSQL server that stops answering is given up on (db/engine.py POSTGRES_TIMEOUTS),
not waited for until the kernel drops the connection; a lock held by a transaction that does
not end is waited for no longer than SQLite's busy timeout, and an idle transaction's locks are
freed by the server (POSTGRES_SESSION); a real server and a silent listener."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError

import dicomnode.db.engine as engine_module
from dicomnode.db import Database, open_database
from dicomnode.db.failures import database_away
from dicomnode.errors import DatabaseUnavailable
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.silent_peers import silent_listener


def test_a_server_that_never_answers_is_given_up_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It takes the TCP connection and says nothing (a host half gone, a proxy without its
    backend); without connect_timeout libpq waits for it for ever."""
    monkeypatch.setitem(engine_module.POSTGRES_TIMEOUTS, "connect_timeout", 2)
    outcome: list[DatabaseUnavailable] = []

    def open_it(port: int) -> None:
        try:
            open_database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nodb")
        except DatabaseUnavailable as refused:
            outcome.append(refused)

    with silent_listener() as port:
        opening = threading.Thread(target=open_it, args=(port,), daemon=True)
        started = time.monotonic()
        opening.start()
        opening.join(60)
        waited = time.monotonic() - started
    assert not opening.is_alive(), "still waiting for a server that never answers"
    assert [str(refused) for refused in outcome] == [
        f"database postgresql+psycopg://postgres@127.0.0.1:{port}/nodb (node.database_url) "
        "does not answer: connection timeout expired; try again once it runs"
    ]
    assert waited < 30


def test_the_timeouts_reach_the_connection_and_the_urls_own_win(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.database()
    try:
        for query, connect_timeout in (("", "10"), ("?connect_timeout=30", "30")):
            db = open_database(url + query)
            try:
                with db.engine.connect() as connection:
                    info = connection.connection.driver_connection.info  # type: ignore[union-attr]
                    used = info.get_parameters()
            finally:
                db.dispose()
            assert used["connect_timeout"] == connect_timeout
            assert (used["keepalives"], used["keepalives_idle"]) == ("1", "30")
            assert used["tcp_user_timeout"] == "60000"
    finally:
        postgres_server.drop(url)


def test_a_read_only_server_is_an_outage_a_constraint_is_not(
    postgres_server: PostgresServer,
) -> None:
    """A standby (a failover under way) refuses writes with 25006, psycopg's InternalError:
    it passes, so a write is tried again; a unique violation never passes."""
    url = postgres_server.database()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x int PRIMARY KEY)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(DBAPIError) as duplicate, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(DBAPIError) as read_only, engine.begin() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            connection.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        engine.dispose()
        postgres_server.drop(url)
    assert database_away(duplicate.value) is None
    assert database_away(read_only.value) == ("cannot execute INSERT in a read-only transaction")


def test_a_server_that_is_down_is_unavailable_not_a_wrong_setting() -> None:
    """Exit 1, "try again", like a busy SQLite file: a service manager that does not restart
    after a configuration error (exit 2) would have left the node down after an outage."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nodb"
    with pytest.raises(DatabaseUnavailable, match=r"does not answer: connection failed"):
        open_database(url)


def _session_setting(db: Database, name: str) -> str:
    with db.engine.connect() as connection:
        return str(connection.execute(text(f"SHOW {name}")).scalar())


def test_the_session_limits_reach_the_connection_and_the_urls_own_win(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.database()
    try:
        for query, lock_timeout in (
            ("", "30s"),
            ("?options=-c%20lock_timeout%3D5s", "5s"),
            ("?options=-c%20deadlock_timeout%3D2s", "30s"),  # another setting: ours still
        ):
            db = open_database(url + query)
            try:
                assert _session_setting(db, "lock_timeout") == lock_timeout
                assert _session_setting(db, "idle_in_transaction_session_timeout") == "10min"
                assert _session_setting(db, "statement_timeout") == "0"  # a long purge may run
            finally:
                db.dispose()
    finally:
        postgres_server.drop(url)


@contextmanager
def _a_row_held(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch, **session: str
) -> Iterator[tuple[Database, Connection]]:
    """A fresh database whose table `t` has one row, locked by a transaction that does not end
    (the holder: its process frozen); the connections made from then on have the `session`
    settings (not the schema's own: a 1 s idle timeout ended its reflection on a busy CI)."""
    url = server.database()
    db = open_database(url)
    try:
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x int PRIMARY KEY)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        db.engine.dispose()  # new connections, with `session`
        for name, value in session.items():
            monkeypatch.setitem(engine_module.POSTGRES_SESSION, name, value)
        with db.engine.connect() as holder:
            holder.execute(text("SELECT x FROM t WHERE x = 1 FOR UPDATE"))
            yield db, holder
    finally:
        db.dispose()
        server.drop(url)


def test_a_lock_that_is_not_let_go_is_waited_for_no_longer_than_the_lock_timeout(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next writer gives up after lock_timeout with an error that passes (it is retried, or
    a C-STORE is answered "try again later"), instead of waiting for ever."""
    with _a_row_held(postgres_server, monkeypatch, lock_timeout="1s") as (db, holder):
        started = time.monotonic()
        with pytest.raises(DBAPIError) as waited, db.session() as session:
            session.execute(text("UPDATE t SET x = 2 WHERE x = 1"))
        waited_for = time.monotonic() - started
        holder.rollback()
    assert database_away(waited.value) == "canceling statement due to lock timeout"
    assert 0.9 < waited_for < 20


def test_an_idle_transaction_is_ended_by_the_server_and_its_locks_freed(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder never comes back: the server ends its transaction, the waiting writer then
    gets the row, and the holder's next statement fails with an error that passes."""
    idle = {"idle_in_transaction_session_timeout": "1s"}
    with _a_row_held(postgres_server, monkeypatch, **idle) as (db, holder):
        with db.session() as session:  # waits until the server ends the holder's
            updated = session.execute(text("UPDATE t SET x = 2 WHERE x = 1")).rowcount
        with pytest.raises(DBAPIError) as ended:
            holder.execute(text("SELECT 1"))
    assert updated == 1
    assert database_away(ended.value) is not None


def test_the_schema_step_waits_for_another_process_however_long_it_takes(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that creates or upgrades the schema holds the schema lock for as long as that
    takes; another starting meanwhile waits it out instead of failing after lock_timeout."""
    monkeypatch.setitem(engine_module.POSTGRES_SESSION, "lock_timeout", "500ms")
    url = postgres_server.database()
    engine = create_engine(url)
    opened: list[Database] = []
    try:
        with engine.begin() as holder:
            key = engine_module._SCHEMA_LOCK_KEY
            holder.execute(text(f"SELECT pg_advisory_xact_lock({key})"))
            opening = threading.Thread(target=lambda: opened.append(open_database(url)))
            opening.start()
            time.sleep(2)  # four lock timeouts
            assert opening.is_alive() and not opened, "did not wait for the schema lock"
        opening.join(30)
        assert len(opened) == 1
        with opened[0].engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
    finally:
        for db in opened:
            db.dispose()
        engine.dispose()
        postgres_server.drop(url)
