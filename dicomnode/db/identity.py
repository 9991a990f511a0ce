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


def claim_identity(db: Database, identity: str) -> str:
    """Record `identity` unless one is recorded already; the one recorded either way."""
    try:
        with db.session() as session:
            if session.get(SpoolIdentity, _ROW) is None:
                session.add(SpoolIdentity(name=_ROW, identity=identity, created_at=db_now(session)))
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
