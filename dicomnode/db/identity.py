"""The database's side of the spool identity (`dicomnode/spool_identity.py`)."""

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Instance, Job, SpoolIdentity

_ROW = "spool"


def recorded_identity(db: Database) -> str | None:
    """The identity of the spool this database belongs to (None: none recorded yet)."""
    with db.reading() as session:
        return session.scalar(select(SpoolIdentity.identity).where(SpoolIdentity.name == _ROW))


def claim_identity(db: Database, identity: str, generation: int = 0) -> str:
    """Record `identity` (at the spool's `generation`) unless one is recorded already; the one
    recorded either way."""
    try:
        with db.session() as session:
            if session.get(SpoolIdentity, _ROW) is None:
                session.add(
                    SpoolIdentity(
                        name=_ROW,
                        identity=identity,
                        created_at=db_now(session),
                        generation=generation,
                    )
                )
    except IntegrityError:  # another process claimed one at the same moment: its stands
        pass
    recorded = recorded_identity(db)
    assert recorded is not None
    return recorded


def replace_identity(db: Database, identity: str) -> None:
    """An admin's repair (`doctor --repair`): this database now belongs to that spool."""
    with db.session() as session:
        row = session.get(SpoolIdentity, _ROW)
        if row is None:
            session.add(SpoolIdentity(name=_ROW, identity=identity, created_at=db_now(session)))
        else:
            row.identity = identity


def holds_instances(db: Database) -> bool:
    with db.reading() as session:
        return bool(session.scalar(select(exists().where(Instance.sop_instance_uid.isnot(None)))))


def holds_nothing(db: Database) -> bool:
    """No instance and no job: a database just made (or emptied)."""
    with db.reading() as session:
        anything = exists().where(Job.id.isnot(None))
        return not holds_instances(db) and not session.scalar(select(anything))


def recorded_generation(db: Database) -> int:
    """The database's count of rounds that made jobs (0 before the first, or before a pair
    had an identity)."""
    with db.reading() as session:
        return (
            session.scalar(select(SpoolIdentity.generation).where(SpoolIdentity.name == _ROW)) or 0
        )


def raise_generation(db: Database, generation: int) -> int:
    """`next_generation`'s count raised to `generation` (an admin's repair: the spool's), never
    lowered: a round counted meanwhile stands. The count now."""
    with db.session() as session:
        row = session.get(SpoolIdentity, _ROW, with_for_update=True)
        if row is None:
            return 0
        row.generation = max(row.generation or 0, generation)
        return row.generation


def next_generation(db: Database) -> int:
    """One more round that made jobs; the count now (0: the pair has no identity yet)."""
    with db.session() as session:
        row = session.get(SpoolIdentity, _ROW, with_for_update=True)
        if row is None:
            return 0
        row.generation = (row.generation or 0) + 1
        return row.generation
