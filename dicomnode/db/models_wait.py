"""Why queued derived jobs wait while a worker's models do not load, said on the jobs themselves.

The log and the `dicomnode_enhancement_waiting` gauge say it once; an administrator who looks
at `dicomnode jobs` sees derived jobs queued for hours with no attempt and no reason. So while
a process's models do not load, its models tick writes the reason into the `error` of every
queued derived job that has none, and clears it once they load or the process stops. A job a
worker takes up gets its error from its attempt, as any other. With several workers the note
names the one that cannot load them: another may take the jobs up meanwhile.
"""

from typing import Any

from sqlalchemy import ColumnElement, CursorResult, or_, update

from dicomnode.db.engine import Database
from dicomnode.db.models import Job
from dicomnode.status import JobPart, JobStatus

WAITS_FOR_MODELS = "waits for a worker whose models load"


def note_models_wait(db: Database, why: str) -> int:
    """Write `why` (which process cannot load them, why, when it tries again) into queued
    derived jobs without another error; how many rows changed. Another process whose models
    load may take them up meanwhile: the note says which one cannot, not that none can."""
    note = f"{WAITS_FOR_MODELS} ({why})"
    noted = Job.error.startswith(WAITS_FOR_MODELS, autoescape=True)
    return _set_queued_derived(db, or_(Job.error.is_(None), noted & (Job.error != note)), note)


def clear_models_wait(db: Database) -> int:
    """The models load: queued derived jobs no longer wait for them; how many rows changed."""
    return _set_queued_derived(db, Job.error.startswith(WAITS_FOR_MODELS, autoescape=True), None)


def _set_queued_derived(db: Database, which: ColumnElement[bool], error: str | None) -> int:
    """Set the error of the queued derived jobs that match `which`; how many rows changed."""
    statement = (
        update(Job)
        .where(Job.part == JobPart.DERIVED, Job.status == JobStatus.QUEUED, which)
        .values(error=error)
    )
    with db.session() as session:
        result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
        return result.rowcount
