"""Bringing an existing database up to the tables this version expects.

`create_all` makes missing tables but never touches existing ones, so a node upgraded in place
would fail on its first query that names a new column, and would never get a new index (a year's
rows then read in full where an index was meant). Columns added since are added here (`ALTER
TABLE ... ADD COLUMN`, with their default for the rows already there), and so are indexes. That
covers this project's schema history so far; renames, type changes or dropped columns would need
real migrations (Alembic).
"""

import logging
from typing import Any

from sqlalchemy import Connection, inspect, literal, text
from sqlalchemy.schema import Column

from dicomnode.db.models import Base

log = logging.getLogger(__name__)


def _column_ddl(column: Column[Any], connection: Connection) -> str:
    ddl = f"{column.name} {column.type.compile(dialect=connection.dialect)}"
    default = getattr(column.default, "arg", None)
    if default is not None and not callable(default):
        value = literal(default, column.type).compile(
            dialect=connection.dialect, compile_kwargs={"literal_binds": True}
        )
        ddl += f" DEFAULT {value}"
        if not column.nullable:
            ddl += " NOT NULL"
    return ddl


def add_missing_tables(connection: Connection) -> list[str]:
    """Create every model table the database lacks (all of them in a new one); return the ones
    added to an existing database."""
    present = set(inspect(connection).get_table_names())
    Base.metadata.create_all(connection)
    added = [table.name for table in Base.metadata.sorted_tables if table.name not in present]
    if present and added:
        log.warning("database schema upgraded: added table %s", ", ".join(added))
    return added if present else []


def add_missing_columns(connection: Connection) -> list[str]:
    """Add every model column an existing table lacks (in the caller's transaction); return
    them as `table.column`."""
    added = []
    inspector = inspect(connection)  # same connection: SQLite allows one writer
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            connection.execute(
                text(f"ALTER TABLE {table.name} ADD COLUMN {_column_ddl(column, connection)}")
            )
            added.append(f"{table.name}.{column.name}")
    if added:
        log.warning("database schema upgraded: added %s", ", ".join(added))
    return added


def add_missing_indexes(connection: Connection) -> list[str]:
    """Create every model index an existing table lacks (in the caller's transaction); return
    their names. On a large database this takes seconds, once, at the first start after an
    upgrade."""
    added = []
    inspector = inspect(connection)
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            if index.name not in present:
                index.create(connection)
                added.append(str(index.name))
    if added:
        log.warning("database schema upgraded: added index %s", ", ".join(added))
    return added
