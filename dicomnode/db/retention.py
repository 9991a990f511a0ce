"""Which delivered series may leave the spool, and forgetting them in one transaction.

A series is purgeable when every job it ever had is done or cancelled, the newest one is done and
finished before the cutoff, no instance is waiting for a new job, and no destination has still to
confirm (Storage Commitment) that it keeps one of its instances. Anything failed, dead, held,
stored (sent nowhere) or still running keeps its inputs: those are what an admin needs to retry.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Select, and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from dicomnode.db.clock import db_now
from dicomnode.db.commitments import forget_commitments, pending_commitment_instances
from dicomnode.db.engine import Database
from dicomnode.db.history import EventKind, forget_history, record_event
from dicomnode.db.models import (
    Delivery,
    Instance,
    Job,
    JobInstance,
    Series,
    Study,
)
from dicomnode.db.refused_copies import forget_refusals
from dicomnode.status import DeliveryStatus, JobStatus

_FINISHED = (JobStatus.DONE, JobStatus.CANCELLED)


@dataclass(frozen=True)
class PurgedSeries:
    study_uid: str
    series_uid: str
    job_ids: list[int]
    paths: list[Path]  # the instance files, for the caller to delete now that the rows are gone

    @property
    def instances(self) -> int:
        return len(self.paths)


def _purgeable(finished_before: datetime, only: str | None = None) -> Select[str]:
    """Series every job of which has finished (done or cancelled), one at least delivered (done,
    or cancelled after every destination took what it sent), and none changed since
    `finished_before`: a late retry of the originals restarts the clock, and a derived job an
    admin cancelled does not keep the series for ever. `only`: that one series, read by its own
    rows (a year's jobs are not grouped again for each series purged)."""
    mine = [] if only is None else [Job.series_uid == only]
    last_change = (
        select(Job.series_uid, func.max(Job.updated_at).label("at"))
        .where(*mine)
        .group_by(Job.series_uid)
        .subquery()
    )
    # Delivered: a job done, or one cancelled after every destination took what it sent, and
    # it sent instances (with forward_originals = false, a derived job whose series QA held
    # sent the series as received; held past held_days, it is cancelled, and no job of its
    # series is done). Not one an admin cancelled with a destination still missing it.
    its_deliveries = Delivery.job_id == Job.id
    sent_to_all = and_(
        Job.status == JobStatus.CANCELLED,
        exists().where(its_deliveries, Delivery.status == DeliveryStatus.DONE, Delivery.sent > 0),
        ~exists().where(its_deliveries, Delivery.status != DeliveryStatus.DONE),
    )
    delivered = select(Job.series_uid).where(or_(Job.status == JobStatus.DONE, sent_to_all), *mine)
    unfinished = select(Job.series_uid).where(Job.status.not_in(_FINISHED), *mine)
    # A destination that has still to confirm it keeps an instance may yet need it again.
    uncommitted = select(Instance.series_uid).where(
        Instance.sop_instance_uid.in_(pending_commitment_instances()),
        *([] if only is None else [Instance.series_uid == only]),
    )
    return (
        select(Series.series_uid)
        .join(last_change, last_change.c.series_uid == Series.series_uid)
        .where(
            Series.pending.is_(False),
            last_change.c.at < finished_before,
            Series.series_uid.in_(delivered),
            Series.series_uid.not_in(unfinished),
            Series.series_uid.not_in(uncommitted),
        )
        .order_by(last_change.c.at)
    )


def expire_held(
    db: Database, held_before: datetime, reason: str, limit: int = 200
) -> list[tuple[int, str]]:
    """Cancel up to `limit` jobs held (QA) since before `held_before` (one transaction: a
    store waits for no more), each with `reason` in its error and history; (job id, series UID)
    of each. Their series are then purged as delivered ones."""
    with db.session() as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.status == JobStatus.HELD, Job.updated_at < held_before)
            .order_by(Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        now = db_now(session)
        for job in jobs:
            job.status, job.error, job.updated_at = JobStatus.CANCELLED, reason, now
            record_event(session, job.id, EventKind.EXPIRE, status=job.status, detail=reason)
        return [(job.id, job.series_uid) for job in jobs]


def purgeable_series(db: Database, finished_before: datetime) -> list[str]:
    """Series UIDs whose delivered data may be deleted (longest finished first)."""
    with db.reading() as session:
        return list(session.scalars(_purgeable(finished_before)))


def purge_series(
    db: Database,
    series_uid: str,
    finished_before: datetime,
    remove_outputs: Callable[[list[int]], None],
) -> PurgedSeries | None:
    """Forget one series: its jobs, deliveries and instance rows; None if it no longer qualifies.

    `remove_outputs(job ids)` runs inside the transaction (derived outputs can always be made
    again). The instance files are the caller's to delete after the commit, so an instance that
    arrives again meanwhile gets a new row and keeps its new file; a crash in between leaves
    files without rows, which `dicomnode doctor` finds.
    """
    with db.session() as session:
        series = lock_series(session, series_uid)
        if series is None:
            return None
        if session.scalar(_purgeable(finished_before, only=series_uid)) is None:
            return None
        return forget_series(session, series.series_uid, series.study_uid, remove_outputs)


def lock_series(session: Session, series_uid: str) -> Series | None:
    """The series row, locked with its study's and its jobs' (nothing joins, changes or requeues
    them until commit); None when there is none, or another transaction deleted it meanwhile."""
    series = session.get(Series, series_uid)
    if series is None:
        return None
    # Study, series, jobs: the order the receiver and the completion tick take them in (no
    # deadlock on PostgreSQL); no new series can join the study while we decide whether to
    # delete it.
    session.scalar(select(Study).where(Study.study_uid == series.study_uid).with_for_update())
    locked = session.scalar(
        select(Series)
        .where(Series.series_uid == series_uid)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    # An admin's retry or resend locks only the job's row: unlocked, a purge that had judged
    # the series done would delete the job the admin had just queued again.
    session.scalars(
        select(Job.id).where(Job.series_uid == series_uid).order_by(Job.id).with_for_update()
    ).all()
    return locked


def forget_series(
    session: Session,
    series_uid: str,
    study_uid: str,
    remove_outputs: Callable[[list[int]], None],
) -> PurgedSeries:
    """Delete a (locked) series' jobs, their deliveries and history, its instance rows, and its
    study when no other series is left; the instance files are the caller's to delete."""
    job_ids = list(session.scalars(select(Job.id).where(Job.series_uid == series_uid)))
    instances = session.execute(
        select(Instance.sop_instance_uid, Instance.path).where(Instance.series_uid == series_uid)
    ).all()
    remove_outputs(job_ids)
    sop_uids = [sop for sop, _ in instances]
    session.execute(delete(JobInstance).where(JobInstance.job_id.in_(job_ids)))
    session.execute(delete(JobInstance).where(JobInstance.sop_instance_uid.in_(sop_uids)))
    session.execute(delete(Delivery).where(Delivery.job_id.in_(job_ids)))
    forget_history(session, job_ids)
    forget_commitments(session, job_ids)
    forget_refusals(session, series_uid)
    session.execute(delete(Job).where(Job.id.in_(job_ids)))
    session.execute(delete(Instance).where(Instance.series_uid == series_uid))
    session.execute(delete(Series).where(Series.series_uid == series_uid))
    session.flush()
    others = select(func.count()).select_from(Series).where(Series.study_uid == study_uid)
    if not session.scalar(others):
        session.execute(delete(Study).where(Study.study_uid == study_uid))
    return PurgedSeries(study_uid, series_uid, job_ids, [Path(p) for _, p in instances])
