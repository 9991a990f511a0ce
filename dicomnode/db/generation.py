"""Which generation of the tables and spool layout the newest dicomnode that used them writes.

`schema.py` brings a database from an older version up to this one; nothing takes a newer one
back down. An older version run on a newer one's database and spool goes on as if nothing had
changed and misreads what it does not know: a version before the outbox had a folder per
attempt (2026-12-02) found a newer one's releases "gone from the outbox", their files in place,
and ended them dead. So each version records the generation it writes (LAYOUT_GENERATION), and
refuses a database that a newer one has raised past it, naming what to do; as Orthanc refuses a
database schema newer than it knows.
"""

from sqlalchemy import Connection, insert, inspect, select, update

from dicomnode.db.clock import db_now
from dicomnode.db.models import LayoutGeneration
from dicomnode.errors import ConfigError

# Raise it with any change to the tables or the spool's layout that this version could not
# read (a new column an older version would ignore is no such change; a new meaning is).
LAYOUT_GENERATION = 1
_ROW = "layout"


def stored_generation(connection: Connection) -> int | None:
    """The generation the database was last brought to (None: before generations were kept,
    the table or its row not there yet)."""
    if not inspect(connection).has_table(LayoutGeneration.__tablename__):
        return None
    generation: int | None = connection.scalar(
        select(LayoutGeneration.generation).where(LayoutGeneration.name == _ROW)
    )
    return generation


def check_generation(connection: Connection, database: str) -> None:
    """ConfigError when a newer version has raised the database past this one's generation."""
    stored = stored_generation(connection)
    if stored is not None and stored > LAYOUT_GENERATION:
        raise ConfigError(
            f"database {database} was brought to layout generation {stored} by a newer "
            f"dicomnode; this version writes generation {LAYOUT_GENERATION} and would misread "
            "its jobs and spool: run the newer version again (going back is not supported; a "
            "backup of the database and spool made before the upgrade can be restored)"
        )


def raise_generation(connection: Connection) -> None:
    """Record this version's generation (in the schema's transaction, after `check_generation`
    refused a database a newer version raised past it); a newer one's is left as it is."""
    stored = stored_generation(connection)
    if stored is not None and stored >= LAYOUT_GENERATION:
        return
    now = db_now(connection)
    if stored is None:
        row = {"name": _ROW, "generation": LAYOUT_GENERATION, "updated_at": now}
        connection.execute(insert(LayoutGeneration).values(**row))
    else:
        connection.execute(
            update(LayoutGeneration)
            .where(LayoutGeneration.name == _ROW)
            .values(generation=LAYOUT_GENERATION, updated_at=now)
        )
