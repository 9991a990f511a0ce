"""Opening the database: SQLite (WAL, immediate transactions) by default, or PostgreSQL.

Only `dicomnode serve` (and `worker`) creates a database. The admin commands open an existing
one, and the read-only ones (`jobs list`, `doctor`, `purge --dry-run`) cannot write to it
(SQLite opened with `mode=ro`, PostgreSQL in read-only transactions): a `--config` that points
at the wrong folder says "no database at ..." instead of making an empty one there.
"""

import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import masked_url
from dicomnode.db.generation import check_generation, raise_generation
from dicomnode.db.models import Base, LayoutGeneration
from dicomnode.db.schema import add_missing_columns, add_missing_indexes, add_missing_tables
from dicomnode.errors import ConfigError, DatabaseUnavailable

# Any constant shared by every dicomnode process: the PostgreSQL advisory lock held while the
# schema is created or upgraded.
_SCHEMA_LOCK_KEY = 0x44434D4E  # "DCMN"
# How long an SQLite statement waits for another connection's lock before "database is locked".
BUSY_TIMEOUT_SECONDS = 30
_WAL_RETRY_SECONDS = 0.05
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
_READS_ONLY = "dicomnode_reads_only"  # the execution option of `Database.reading` sessions
# libpq's settings for a PostgreSQL server that stops answering (a network partition, a host
# gone, not a restart, which closes the connections): without them a C-STORE, a lease renewal or
# a worker's claim waits until the kernel gives up on the connection (about 15 minutes). A
# setting in node.database_url's query (`?connect_timeout=30`) is kept.
POSTGRES_TIMEOUTS = {
    "connect_timeout": 10,  # seconds to open a connection
    "keepalives": 1,  # an idle connection's peer is asked after 30 s, every 10 s, 3 times
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # ms that sent data may stay unacknowledged
}
# The server's own limits for one session (set when a connection opens). A lock wait ends as
# SQLite's does (BUSY_TIMEOUT_SECONDS), with an error the caller retries or answers "try
# again later" to (a C-STORE's sender resends): never a C-STORE, a claim or a purge that waits
# for ever behind a transaction that does not end. A transaction left open and idle (its
# process frozen, a thread stuck in file I/O) is ended by the server, freeing the locks it
# holds; ten minutes is far beyond any transaction of ours, file work inside one included.
# No statement_timeout: a large purge may take long, and a server that stops answering is
# the keepalives' to find. Set only where the server's value is its built-in default: one that
# node.database_url's `options` (`?options=-c%20lock_timeout%3D60s`), PGOPTIONS, ALTER ROLE or
# DATABASE ... SET or postgresql.conf gives is kept. By SET, not libpq's `options`, which a
# pooler such as PgBouncer refuses.
POSTGRES_SESSION = {
    "lock_timeout": f"{BUSY_TIMEOUT_SECONDS}s",
    "idle_in_transaction_session_timeout": "10min",
}
_READING_STATEMENTS = ("SELECT", "WITH", "BEGIN", "PRAGMA", "EXPLAIN")


def _use_wal(cursor: "sqlite3.Cursor") -> None:
    """Put the file in WAL mode (it stays so), waiting out other processes doing the same.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    at once, without its busy handler, when another connection holds a lock meanwhile: processes
    that start together on an empty database (a listener and its workers) saw that about once
    in a hundred starts. So the switch is tried again for up to the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_RETRY_SECONDS)


def _configure_sqlite(engine: Engine, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        if not read_only:  # a reader finds the node's database in WAL mode already
            _use_wal(cursor)
            # After a checkpoint the WAL file is cut back to this; it otherwise kept the size
            # of the largest burst (a big purge) for as long as the node ran.
            cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        # FULL: a committed row survives power loss, matching the spool's fsync promise.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        # IMMEDIATE takes the write lock up front, so concurrent writers queue on busy_timeout
        # instead of failing with "database is locked" when a read upgrades to a write. A
        # session that only reads (`Database.reading`) needs no lock: in WAL it reads a
        # snapshot, and a C-STORE's write never waits for it.
        reads = read_only or connection.get_execution_options().get(_READS_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")

    @event.listens_for(engine, "before_cursor_execute")
    def _reads_only(connection, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        # A write in a deferred transaction would fail at once on a busy database instead of
        # waiting its turn: `Database.reading` sessions may only read.
        reading = connection.get_execution_options().get(_READS_ONLY, False)
        if reading and not statement.lstrip().upper().startswith(_READING_STATEMENTS):
            raise RuntimeError(f"a Database.reading() session may not write: {statement[:60]}")


def _configure_postgres(engine: Engine) -> None:
    """Each new connection gets POSTGRES_SESSION's settings where nothing set them otherwise."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            cursor.execute(
                "SELECT name FROM pg_settings WHERE name = ANY(%s) AND source = 'default'",
                (list(POSTGRES_SESSION),),
            )
            for (name,) in cursor.fetchall():
                cursor.execute("SELECT set_config(%s, %s, false)", (name, POSTGRES_SESSION[name]))
        dbapi_connection.commit()


_LOW_DISK_MB = 16  # below this, a failure to open SQLite names the free space too


def _no_database(where: str) -> str:
    return (
        f"no database at {where}: `dicomnode serve` makes it on its first start; "
        "check --config and node.data_dir (or node.database_url)"
    )


def _read_only_sqlite(path: str) -> "sqlite3.Connection":
    # mode=ro: SQLite refuses every write, and never creates the file.
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


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
    """An engine plus a session factory; `session()` is one transaction.

    `create=False`: the database must exist already (ConfigError "no database at ..." if not);
    `read_only=True` (implies it): no statement can write, and no file or folder is made.
    """

    def __init__(self, url: str, *, create: bool = True, read_only: bool = False) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            # SQLAlchemy's message quotes the whole URL, password included.
            raise ConfigError(
                f"setting node.database_url: {masked_url(url)!r} is not a database URL"
            ) from None
        self.url = url
        self.read_only = read_only
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        file = parsed.database if self.is_sqlite and parsed.database != ":memory:" else None
        self._file = Path(file) if file else None
        if file and (read_only or not create):
            if not Path(file).is_file():
                raise ConfigError(_no_database(file))
        elif file:
            Path(file).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if file and read_only:
            options["creator"] = lambda: _read_only_sqlite(file)
        elif read_only and not self.is_sqlite:
            options["execution_options"] = {"postgresql_readonly": True}  # read-only transactions
        if parsed.get_backend_name() == "postgresql":
            options["connect_args"] = {
                key: value for key, value in POSTGRES_TIMEOUTS.items() if key not in parsed.query
            }
        try:
            self.engine = create_engine(url, pool_pre_ping=not self.is_sqlite, **options)
        except ModuleNotFoundError as exc:
            raise ConfigError(_missing_driver(url, exc.name or str(exc))) from None
        if self.is_sqlite:
            _configure_sqlite(self.engine, read_only)
        elif parsed.get_backend_name() == "postgresql":
            _configure_postgres(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        reading: dict[str, Any] = {_READS_ONLY: True}
        if not self.is_sqlite:  # one snapshot for the whole transaction, writes refused
            reading |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        readers = self.engine.execution_options(**reading)
        self._reading_sessions = sessionmaker(readers, expire_on_commit=False)

    @property
    def file(self) -> Path | None:
        """The SQLite file (None: PostgreSQL, or SQLite in memory)."""
        return self._file

    def check_schema(self, *, columns: bool = True) -> None:
        """Make sure this version's tables (and, with `columns`, their columns) are there,
        without changing anything."""
        # The layout generation is a guard only: a database from before it is read as one of
        # no generation (`check_generation`), not refused as one that lacks a table.
        tables = [t for t in Base.metadata.sorted_tables if t is not LayoutGeneration.__table__]
        try:
            inspector = inspect(self.engine)
            missing = []
            for table in tables:
                if not inspector.has_table(table.name):
                    missing.append(table.name)
                elif columns:
                    present = {column["name"] for column in inspector.get_columns(table.name)}
                    missing += [
                        f"{table.name}.{c.name}" for c in table.columns if c.name not in present
                    ]
        except OperationalError as exc:
            raise ConfigError(self._cannot_open(exc)) from None
        if len(missing) == len(tables) and not self.is_sqlite:
            raise ConfigError(_no_database(masked_url(self.url)))
        if missing:
            raise ConfigError(
                f"database {masked_url(self.url)} lacks {', '.join(missing)}: not a dicomnode "
                "database, or one of an older version (`dicomnode serve` or `worker` brings it "
                "up to date)"
            )
        try:
            with self.engine.connect() as connection:
                check_generation(connection, masked_url(self.url))
        except OperationalError as exc:
            raise ConfigError(self._cannot_open(exc)) from None

    def _cannot_open(self, exc: OperationalError) -> str:
        """Why the database cannot be opened; for SQLite on a full file system, that too (its
        own words are "disk I/O error", and an admin must make room before anything works).
        DatabaseUnavailable when another process held SQLite's write lock all along, or the
        server does not answer (a wrong host or port is a ConfigError only by its words)."""
        from dicomnode.db.failures import database_away  # it imports this module

        if self.is_sqlite and "database is locked" in str(exc.orig):
            raise DatabaseUnavailable(
                f"database {masked_url(self.url)} is busy: another process held its write lock "
                f"for {BUSY_TIMEOUT_SECONDS} s (a node starting or purging, `doctor --repair`, "
                "a backup); try again"
            ) from None
        said = database_away(exc)
        if not self.is_sqlite and said is not None:
            raise DatabaseUnavailable(
                f"database {masked_url(self.url)} (node.database_url) does not answer: {said}; "
                "try again once it runs"
            ) from None
        message = f"cannot open database {masked_url(self.url)}: {exc.orig}"
        if self._file is not None:
            try:
                free_mb = shutil.disk_usage(self._file.parent).free // (1024 * 1024)
            except OSError:
                return message
            if free_mb < _LOW_DISK_MB:
                message += f" ({self._file.parent} has {free_mb} MB free: make room first)"
        return message

    def create_schema(self) -> None:
        """Create missing tables and add the columns and indexes a database from an older
        version lacks; refuse one a newer version has raised past this one's layout generation
        (`db/generation.py`), else record this one's.

        One transaction; on PostgreSQL under an advisory lock, so processes that start together
        on an empty database (a listener and its workers) take turns instead of racing to create
        the same tables.
        """
        try:
            with self.engine.begin() as connection:
                if not self.is_sqlite:
                    # Wait for a process that creates or upgrades the schema however long it
                    # takes (an index on a large table): its end is the one to wait for.
                    connection.execute(text("SET LOCAL lock_timeout = 0"))
                    connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                # A database a newer version raised past this one is refused before anything of
                # it is upgraded (its log would say so, of a database left as it was).
                check_generation(connection, masked_url(self.url))
                add_missing_tables(connection)
                add_missing_columns(connection)
                add_missing_indexes(connection)
                raise_generation(connection)
        except OperationalError as exc:
            raise ConfigError(self._cannot_open(exc)) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only (a report, a listing, a scan for work): one consistent
        snapshot that takes no write lock on SQLite, so a long one holds up no store. A write in
        it is refused (RuntimeError on SQLite, PostgreSQL's read-only transaction)."""
        with self._reading_sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, *, create: bool = True, read_only: bool = False) -> Database:
    """The database at `url`, with the tables this version expects.

    `create=False`: an existing database only (its missing columns are still added);
    `read_only=True`: an existing database, read as it is.
    """
    database = Database(url, create=create, read_only=read_only)
    try:
        if read_only or not create:
            database.check_schema(columns=read_only)
        if not read_only:
            database.create_schema()
    except Exception as exc:
        from dicomnode.db.failures import database_damaged  # it imports this module

        damage = database_damaged(exc)
        if damage is None or database.file is None:
            raise
        database.dispose()
        raise ConfigError(damaged_advice(database.file, damage)) from None
    return database


def damaged_advice(file: Path | str, said: str) -> str:
    """What an admin can do about a damaged SQLite file (README, Backup and restore)."""
    return (
        f"the database {file} is damaged ({said}); waiting will not mend it. Stop every "
        "dicomnode process, then restore the last backup (README: Backup and restore), or "
        f"try `sqlite3 {file} .recover`, or move it and its -wal and -shm files aside, start "
        "`dicomnode serve` (it makes a new database, and stops at the spool it does not know), "
        "run `dicomnode doctor --repair` (it indexes the spool: the history is lost, series "
        "already delivered are sent again) and start again"
    )
