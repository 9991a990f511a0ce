"""Opening the database: SQLite (WAL, immediate transactions) by default, or PostgreSQL."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import masked_url
from dicomnode.db.models import Base
from dicomnode.db.schema import add_missing_columns
from dicomnode.errors import ConfigError

# Any constant shared by every dicomnode process: the PostgreSQL advisory lock held while the
# schema is created or upgraded.
_SCHEMA_LOCK_KEY = 0x44434D4E  # "DCMN"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, matching the spool's fsync promise.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        # IMMEDIATE takes the write lock up front, so concurrent writers queue on busy_timeout
        # instead of failing with "database is locked" when a read upgrades to a write.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine plus a session factory; `session()` is one transaction."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            # SQLAlchemy's message quotes the whole URL, password included.
            raise ConfigError(
                f"setting node.database_url: {masked_url(url)!r} is not a database URL"
            ) from None
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables and add the columns a database from an older version lacks.

        One transaction; on PostgreSQL under an advisory lock, so processes that start together
        on an empty database (a listener and its workers) take turns instead of racing to create
        the same tables.
        """
        try:
            with self.engine.begin() as connection:
                if not self.is_sqlite:
                    connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                Base.metadata.create_all(connection)
                add_missing_columns(connection)
        except OperationalError as exc:
            raise ConfigError(f"cannot open database {masked_url(self.url)}: {exc.orig}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    database = Database(url)
    database.create_schema()
    return database
