"""`dicomnode jobs discard`: forgetting a series an admin gave up on (a dead or cancelled job).

Retention purges only what was delivered; a dead or cancelled series keeps its inputs until an
admin decides. Discarding removes the whole series (every job of it, its instances, their
history) once none of its jobs will still do anything (`transitions.discard_refusal`).
"""

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomnode.db.engine import Database
from dicomnode.db.history import EventKind, record_event
from dicomnode.db.models import Instance, Job, Series
from dicomnode.db.retention import PurgedSeries, forget_series, lock_series
from dicomnode.db.transitions import discard_refusal
from dicomnode.errors import JobStateError
from dicomnode.status import JobStatus


@dataclass(frozen=True)
class DiscardPlan:
    """What `jobs discard ID` deletes (its dry run prints this)."""

    job_id: int
    study_uid: str
    series_uid: str
    job_ids: list[int]
    instances: int


def _checked(session: Session, job_id: int, lock: bool) -> tuple[Job, Series | None]:
    job = session.get(Job, job_id)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist (`dicomnode jobs list` lists them)")
    series = lock_series(session, job.series_uid) if lock else session.get(Series, job.series_uid)
    if lock and session.get(Job, job_id, populate_existing=True) is None:
        raise JobStateError(f"job {job_id} does not exist (its series was purged meanwhile)")
    siblings = session.execute(
        select(Job.id, Job.status).where(Job.series_uid == job.series_uid).order_by(Job.id)
    ).all()
    refused = discard_refusal(
        job_id,
        JobStatus(job.status),
        [(other, JobStatus(status)) for other, status in siblings],
        instances_waiting=series is not None and series.pending,
    )
    if refused:
        raise JobStateError(refused)
    return job, series


def plan_discard(db: Database, job_id: int) -> DiscardPlan:
    """What discarding job `job_id` would delete; JobStateError when it may not be discarded."""
    with db.session() as session:
        job, _ = _checked(session, job_id, lock=False)
        job_ids = list(session.scalars(select(Job.id).where(Job.series_uid == job.series_uid)))
        instances = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.series_uid == job.series_uid)
        )
        return DiscardPlan(job_id, job.study_uid, job.series_uid, job_ids, instances or 0)


def discard_series(
    db: Database, job_id: int, remove_outputs: Callable[[list[int]], None], user: str
) -> PurgedSeries:
    """Delete the series of dead or cancelled job `job_id` from the database (checked again
    under lock); the instance files are the caller's to delete after the commit."""
    with db.session() as session:
        job, _ = _checked(session, job_id, lock=True)
        purged = forget_series(session, job.series_uid, job.study_uid, remove_outputs)
        record_event(
            session,
            job_id,
            EventKind.DISCARD,
            detail=(
                f"series={purged.series_uid} discarded: jobs {','.join(map(str, purged.job_ids))}"
                f", {purged.instances} instance(s)"
            ),
            user=user,
        )
        return purged
