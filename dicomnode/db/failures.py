"""Telling a database's own failure (locked, disk full, server gone) from every other error.

The layers above name such a failure without knowing SQL: the receiver answers a C-STORE it
could not record with "try again later" and one log line in the database's own words (not
SQLAlchemy's text, which adds the statement, its parameters and a web link); the job runner
retries work that a database failure interrupted.
"""

import logging
import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dicomnode.db.group_commit import RowNotRecorded


def underlying(error: BaseException) -> BaseException:
    """The error a grouped commit (`RowNotRecorded`) carries; any other error itself."""
    while isinstance(error, RowNotRecorded) and error.__cause__ is not None:
        error = error.__cause__
    return error


def database_said(error: BaseException) -> str | None:
    """The database's first line when `error` is its failure; None for any other error."""
    error = underlying(error)
    if isinstance(error, RowNotRecorded):  # its transaction never ended (no cause to tell)
        return str(error)
    if isinstance(error, PoolTimeout):  # every connection of the pool busy: not a bug of ours
        return str(error).split(" (Background on this error", 1)[0]
    driver_error: BaseException | None = error
    if isinstance(error, DBAPIError):
        driver_error = error.orig
    elif not isinstance(error, sqlite3.Error):
        return None
    said = str(driver_error).strip().splitlines()
    return said[0] if said else type(driver_error).__name__


# What passes by itself. PostgreSQL, by SQLSTATE (its class, or the whole code): the connection
# (08), a transaction rolled back for a conflict (40: serialization, deadlock), resources (53),
# a lock not available (55P03), the operator (57: shutdown, starting up), the system (58), a
# read-only transaction (25006: a standby promoted meanwhile, a failover), a transaction the
# server ended for idling (25P03: POSTGRES_SESSION's limit). SQLite, by primary
# result code: BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL.
_PASSING_SQLSTATES = ("08", "40", "53", "55P03", "57", "58", "25006", "25P03")
_PASSING_SQLITE_CODES = frozenset({5, 6, 10, 13, 14, 15})


def database_away(error: BaseException) -> str | None:
    """`database_said`, for a failure that may pass by itself (locked, busy, the connection or
    the server gone, every pooled connection taken); None for any other, a database's included
    (a constraint, a bad statement, a missing table: the same write fails again)."""
    error = underlying(error)
    driver = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(error, PoolTimeout):
        passing = True
    elif isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None)
        passing = code is not None and code & 0xFF in _PASSING_SQLITE_CODES
    elif (sqlstate := getattr(driver, "sqlstate", None)) is not None:
        passing = str(sqlstate).startswith(_PASSING_SQLSTATES)
    else:  # a driver error without a code: the connection, if SQLAlchemy says it is
        passing = isinstance(error, (OperationalError, InterfaceError))
    return database_said(error) if passing else None


# SQLite's primary result codes for a file that is not a sound database: CORRUPT, NOTADB.
_DAMAGED_SQLITE_CODES = frozenset({11, 26})


def database_damaged(error: BaseException) -> str | None:
    """`database_said`, for a SQLite file that is damaged (waiting will not mend it); None for
    any other error."""
    error = underlying(error)
    driver = error.orig if isinstance(error, DBAPIError) else error
    code = getattr(driver, "sqlite_errorcode", None) if isinstance(driver, sqlite3.Error) else None
    if code is None or code & 0xFF not in _DAMAGED_SQLITE_CODES:
        return None
    return database_said(error)


def log_failure(logger: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """`message` with `error`'s traceback; while the database is away (it may pass by
    itself), one WARNING line that says so instead: the node tells the outage once
    (`guarded.py`), and a traceback per job at every renewal filled the log while PostgreSQL
    restarted."""
    said = database_away(error)
    if said is None:
        logger.error(message, *args, exc_info=error)
    else:
        logger.warning(f"{message}: the database is away: %s", *args, said)
