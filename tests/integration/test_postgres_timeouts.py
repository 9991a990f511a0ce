"""A PostgreSQL server that stops answering is given up on (db/engine.py POSTGRES_TIMEOUTS),
not waited for until the kernel drops the connection; a real server and a silent listener."""

import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

import dicomnode.db.engine as engine_module
from dicomnode.db import open_database
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
