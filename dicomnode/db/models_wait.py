"""Why queued derived jobs wait while a worker's models do not load, said on the jobs themselves.

The log and the `dicomnode_enhancement_waiting` gauge say it once; an administrator who looks
at `dicomnode jobs` sees derived jobs queued for hours with no attempt and no reason. So while
a process's models do not load, its models tick writes the reason into the `error` of every
queued derived job that has none, and clears it once they load or the process stops. A job a
worker takes up gets its error from its attempt, as any other. With several workers the note
names the one that cannot load them: another may take the jobs up meanwhile.
"""

from typing import Any

from sqlalchemy import CursorResult, Update, or_, update

from dicomnode.db.engine import Database
from dicomnode.db.models import Job
from dicomnode.status import JobPart, JobStatus

WAITS_FOR_MODELS = "waits for a worker whose models load"


def note_models_wait(db: Database, why: str) -> int:
    """Write `why` (which process cannot load them, why, when it tries again) into queued
    derived jobs without another error; how many rows changed. Another process whose models
    load may take them up meanwhile: the note says which one cannot, not that none can."""
    note = f"{WAITS_FOR_MODELS} ({why})"
    return _changed(
        db,
        update(Job)
        .where(
            Job.part == JobPart.DERIVED,
            Job.status == JobStatus.QUEUED,
            or_(Job.error.is_(None), Job.error.startswith(WAITS_FOR_MODELS, autoescape=True)),
            or_(Job.error.is_(None), Job.error != note),
        )
        .values(error=note),
    )


def clear_models_wait(db: Database) -> int:
    """The models load: queued derived jobs no longer wait for them; how many rows changed."""
    return _changed(
        db,
        update(Job)
        .where(
            Job.part == JobPart.DERIVED,
            Job.status == JobStatus.QUEUED,
            Job.error.startswith(WAITS_FOR_MODELS, autoescape=True),
        )
        .values(error=None),
    )


def _changed(db: Database, statement: Update) -> int:
    with db.session() as session:
        result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
        return result.rowcount
