"""Opening the database: SQLite (WAL, immediate transactions) by default, or PostgreSQL."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import masked_url
from dicomnode.db.models import Base
from dicomnode.db.schema import add_missing_columns
from dicomnode.errors import ConfigError


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


def _missing_driver(url: str, module: str) -> str:
    hint = (
        "pip install 'dicomnode[postgresql]' and use a postgresql+psycopg:// URL"
        if make_url(url).get_backend_name() == "postgresql"
        else f"install {module}"
    )
    return (
        f"setting node.database_url: {masked_url(url)!r} needs the Python module {module!r}, "
        f"which is not installed: {hint}"
    )


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
        try:
            self.engine = create_engine(url, pool_pre_ping=not self.is_sqlite)
        except ModuleNotFoundError as exc:
            raise ConfigError(_missing_driver(url, exc.name or str(exc))) from None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables and add the columns a database from an older version lacks."""
        try:
            Base.metadata.create_all(self.engine)
            add_missing_columns(self.engine)
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
