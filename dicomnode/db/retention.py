"""Which delivered series may leave the spool, and forgetting them in one transaction.

A series is purgeable when every job it ever had is done or cancelled, the newest one is done and
finished before the cutoff, and no instance is waiting for a new job. Anything failed, dead, held
or still running keeps its inputs: those are what an admin needs to retry.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Select, delete, func, select

from dicomnode.db.engine import Database
from dicomnode.db.models import (
    Delivery,
    Instance,
    Job,
    JobInstance,
    JobStatus,
    Series,
    Study,
)

_FINISHED = (JobStatus.DONE, JobStatus.CANCELLED)


@dataclass(frozen=True)
class PurgedSeries:
    study_uid: str
    series_uid: str
    job_ids: list[int]
    instances: int


def _purgeable(finished_before: datetime) -> Select[tuple[str]]:
    newest_job = (
        select(Job.series_uid, func.max(Job.id).label("job_id")).group_by(Job.series_uid).subquery()
    )
    unfinished = select(Job.series_uid).where(Job.status.not_in(_FINISHED))
    return (
        select(Series.series_uid)
        .join(newest_job, newest_job.c.series_uid == Series.series_uid)
        .join(Job, Job.id == newest_job.c.job_id)
        .where(
            Series.pending.is_(False),
            Job.status == JobStatus.DONE,
            Job.updated_at < finished_before,
            Series.series_uid.not_in(unfinished),
        )
        .order_by(Job.updated_at)
    )


def purgeable_series(db: Database, finished_before: datetime) -> list[str]:
    """Series UIDs whose delivered data may be deleted (longest finished first)."""
    with db.session() as session:
        return list(session.scalars(_purgeable(finished_before)))


def purge_series(
    db: Database,
    series_uid: str,
    finished_before: datetime,
    remove_files: Callable[[list[Path], list[int]], None],
) -> PurgedSeries | None:
    """Delete one series' rows after `remove_files(instance paths, job ids)` has run.

    The files go first, inside the transaction: a crash in between leaves rows without files,
    which the next pass deletes, never files without rows (which `doctor` would take for
    instances to forward). None when the series no longer qualifies (something arrived).
    """
    with db.session() as session:
        # Lock the series row (PostgreSQL; SQLite serialises writers) against a new instance.
        series = session.scalar(
            select(Series).where(Series.series_uid == series_uid).with_for_update()
        )
        still = _purgeable(finished_before).where(Series.series_uid == series_uid)
        if series is None or session.scalar(still) is None:
            return None
        job_ids = list(session.scalars(select(Job.id).where(Job.series_uid == series_uid)))
        instances = session.execute(
            select(Instance.sop_instance_uid, Instance.path).where(
                Instance.series_uid == series_uid
            )
        ).all()
        remove_files([Path(path) for _, path in instances], job_ids)
        sop_uids = [sop for sop, _ in instances]
        session.execute(delete(JobInstance).where(JobInstance.job_id.in_(job_ids)))
        session.execute(delete(JobInstance).where(JobInstance.sop_instance_uid.in_(sop_uids)))
        session.execute(delete(Delivery).where(Delivery.job_id.in_(job_ids)))
        session.execute(delete(Job).where(Job.id.in_(job_ids)))
        session.execute(delete(Instance).where(Instance.series_uid == series_uid))
        study_uid = series.study_uid
        session.delete(series)
        session.flush()
        others = select(func.count()).select_from(Series).where(Series.study_uid == study_uid)
        if not session.scalar(others):
            session.execute(delete(Study).where(Study.study_uid == study_uid))
        return PurgedSeries(study_uid, series_uid, job_ids, len(instances))
