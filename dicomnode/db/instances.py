"""Recording received instances and the completion rule that turns quiet series into jobs."""

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicomnode.db.engine import Database
from dicomnode.db.models import (
    Delivery,
    Instance,
    Job,
    JobInstance,
    JobStatus,
    Series,
    Study,
    utcnow,
)
from dicomnode.db.records import ReceivedInstance

log = logging.getLogger(__name__)


def stored_path(db: Database, sop_instance_uid: str) -> Path | None:
    """The spool path of an instance already received, or None."""
    with db.session() as session:
        path = session.scalar(
            select(Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
        )
    return Path(path) if path is not None else None


def _touch_study_and_series(session: Session, item: ReceivedInstance, now: datetime) -> None:
    study = session.get(Study, item.study_uid)
    if study is None:
        session.add(Study(study_uid=item.study_uid, first_received_at=now, last_received_at=now))
    else:
        study.last_received_at = now
    series = session.get(Series, item.series_uid)
    if series is None:
        session.add(
            Series(
                series_uid=item.series_uid,
                study_uid=item.study_uid,
                modality=item.modality,
                first_received_at=now,
                last_received_at=now,
                pending=True,
            )
        )
    else:
        series.last_received_at = now
        series.pending = True


def record_instance(db: Database, item: ReceivedInstance) -> Path | None:
    """Insert or update the instance row; return the previous path if the file moved.

    A re-sent SOP Instance UID replaces the earlier copy and marks its series pending again,
    so the next job forwards the latest version.
    """
    now = utcnow()
    with db.session() as session:
        _touch_study_and_series(session, item, now)
        row = session.get(Instance, item.sop_instance_uid)
        previous = None
        if row is None:
            row = Instance(sop_instance_uid=item.sop_instance_uid)
            session.add(row)
        elif row.path != str(item.path):
            previous = Path(row.path)
        row.series_uid = item.series_uid
        row.study_uid = item.study_uid
        row.sop_class_uid = item.sop_class_uid
        row.transfer_syntax_uid = item.transfer_syntax_uid
        row.path = str(item.path)
        row.size_bytes = item.size_bytes
        row.calling_aet = item.calling_aet
        row.received_at = now
    return previous


def create_jobs_for_quiet_series(
    db: Database, quiet_seconds: float, destinations: list[str]
) -> list[int]:
    """Turn every pending series with no new instance for `quiet_seconds` into a queued job.

    The job takes all instances of the series; older jobs of the series that have not started
    yet are cancelled as superseded, so a late instance never causes two runs of the same work.
    """
    cutoff = utcnow() - timedelta(seconds=quiet_seconds)
    created: list[int] = []
    with db.session() as session:
        quiet = session.scalars(
            select(Series).where(Series.pending.is_(True), Series.last_received_at <= cutoff)
        ).all()
        for series in quiet:
            now = utcnow()
            series.pending = False
            job = Job(
                study_uid=series.study_uid,
                series_uid=series.series_uid,
                status=JobStatus.QUEUED,
                created_at=now,
                updated_at=now,
                next_attempt_at=now,
            )
            session.add(job)
            session.flush()
            sop_uids = session.scalars(
                select(Instance.sop_instance_uid).where(Instance.series_uid == series.series_uid)
            ).all()
            session.add_all(JobInstance(job_id=job.id, sop_instance_uid=uid) for uid in sop_uids)
            session.add_all(Delivery(job_id=job.id, destination=name) for name in destinations)
            session.execute(
                update(Job)
                .where(
                    Job.series_uid == series.series_uid,
                    Job.id != job.id,
                    Job.status.in_([JobStatus.QUEUED, JobStatus.FAILED]),
                )
                .values(
                    status=JobStatus.CANCELLED, error=f"superseded by job {job.id}", updated_at=now
                )
            )
            created.append(job.id)
            log.info(
                "job created job=%d study=%s series=%s instances=%d",
                job.id,
                series.study_uid,
                series.series_uid,
                len(sop_uids),
            )
    return created
