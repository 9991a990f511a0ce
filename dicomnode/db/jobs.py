"""The job state machine: claiming with a lease, transitions, retries and admin actions.

Every transition made by a worker names the lease owner in its WHERE clause: a worker whose lease
lapsed (and whose job was reclaimed) or whose job an admin cancelled changes nothing.
"""

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dicomnode.config import RetrySettings
from dicomnode.db.backoff import retry_delay_seconds
from dicomnode.db.engine import Database
from dicomnode.db.models import (
    ACTIVE_STATUSES,
    Delivery,
    DeliveryStatus,
    Instance,
    Job,
    JobInstance,
    JobStatus,
    utcnow,
)
from dicomnode.db.records import DeliveryRecord, JobRecord, SpooledInstance
from dicomnode.errors import JobStateError

log = logging.getLogger(__name__)


def _record(session: Session, job: Job) -> JobRecord:
    count = session.scalar(
        select(func.count()).select_from(JobInstance).where(JobInstance.job_id == job.id)
    )
    deliveries = session.scalars(
        select(Delivery).where(Delivery.job_id == job.id).order_by(Delivery.id)
    ).all()
    return JobRecord(
        id=job.id,
        study_uid=job.study_uid,
        series_uid=job.series_uid,
        status=job.status,
        attempts=job.attempts,
        instances=count or 0,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        next_attempt_at=job.next_attempt_at,
        lease_owner=job.lease_owner,
        deliveries=tuple(
            DeliveryRecord(d.destination, d.status, d.attempts, d.sent, d.error, d.updated_at)
            for d in deliveries
        ),
        details=json.loads(job.details) if job.details else None,
        released=bool(job.released),
    )


def get_job(db: Database, job_id: int) -> JobRecord | None:
    with db.session() as session:
        job = session.get(Job, job_id)
        return _record(session, job) if job is not None else None


def job_ids(db: Database) -> set[int]:
    """Every job id in the table (for `dicomnode doctor`'s outbox check)."""
    with db.session() as session:
        return set(session.scalars(select(Job.id)))


def list_jobs(db: Database, status: str | None = None, limit: int = 100) -> list[JobRecord]:
    """Newest first."""
    with db.session() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Job.status == status)
        return [_record(session, job) for job in session.scalars(query).all()]


def claim_next_job(db: Database, owner: str, lease_seconds: float) -> JobRecord | None:
    """Take the oldest due job (queued, or failed and due again) under a lease."""
    now = utcnow()
    with db.session() as session:
        due = (
            select(Job.id)
            .where(
                Job.status.in_([JobStatus.QUEUED, JobStatus.FAILED]),
                Job.next_attempt_at <= now,
            )
            .order_by(Job.next_attempt_at, Job.id)
            .limit(1)
        )
        if not db.is_sqlite:  # several workers on PostgreSQL: never wait on each other's rows
            due = due.with_for_update(skip_locked=True)
        job_id = session.scalar(due)
        if job_id is None:
            return None
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.PROCESSING,
                attempts=Job.attempts + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        )
        job = session.get(Job, job_id)
        session.refresh(job)
        return _record(session, job)


def renew_lease(db: Database, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend a held lease; False means the job is no longer ours (reclaimed or cancelled)."""
    now = utcnow()
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE_STATUSES))
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
        return result.rowcount == 1


def holds_lease(db: Database, job_id: int, owner: str) -> bool:
    """Whether `owner` still holds the job (not cancelled, reclaimed or claimed again)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        return job is not None and job.lease_owner == owner and job.status in ACTIVE_STATUSES


def set_active_status(db: Database, job_id: int, owner: str, status: JobStatus) -> bool:
    """Move a held job between processing and forwarding."""
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE_STATUSES))
            .values(status=status, updated_at=utcnow())
        )
        return result.rowcount == 1


def record_job_details(db: Database, job_id: int, owner: str, details: dict[str, Any]) -> bool:
    """Store what this processing attempt did (shown by `dicomnode jobs show`)."""
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(details=json.dumps(details), updated_at=utcnow())
        )
        return result.rowcount == 1


def job_inputs(db: Database, job_id: int) -> list[SpooledInstance]:
    with db.session() as session:
        rows = session.execute(
            select(Instance)
            .join(JobInstance, JobInstance.sop_instance_uid == Instance.sop_instance_uid)
            .where(JobInstance.job_id == job_id)
        ).scalars()
        return [
            SpooledInstance(
                r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax_uid, Path(r.path)
            )
            for r in rows
        ]


def open_deliveries(db: Database, job_id: int) -> list[str]:
    """Destinations this job still has to reach (pending or transiently failed)."""
    with db.session() as session:
        return list(
            session.scalars(
                select(Delivery.destination).where(
                    Delivery.job_id == job_id,
                    Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]),
                )
            )
        )


def record_delivery(
    db: Database,
    job_id: int,
    destination: str,
    status: DeliveryStatus,
    sent: int,
    error: str | None,
) -> None:
    with db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.job_id == job_id, Delivery.destination == destination)
            .values(
                status=status,
                sent=sent,
                error=error,
                attempts=Delivery.attempts + 1,
                updated_at=utcnow(),
            )
        )


def finish_attempt(
    db: Database,
    job_id: int,
    owner: str,
    policy: RetrySettings,
    error: str | None = None,
    transient: bool = True,
    hold: str | None = None,
) -> JobRecord | None:
    """Close a worker's attempt: done (or held), failed (retry later) or dead.

    `error` is a failure before delivery (e.g. unreadable inputs); `transient` says whether a
    later attempt may fix it; `hold` is why a successful attempt kept outputs back for an admin.
    Returns None when the job was no longer held by `owner`.
    """
    now = utcnow()
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.lease_owner != owner or job.status not in ACTIVE_STATUSES:
            log.warning("job lease lost, result discarded job=%d owner=%s", job_id, owner)
            return None
        deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).all()
        failed = [d for d in deliveries if d.status == DeliveryStatus.FAILED]
        dead = [d for d in deliveries if d.status == DeliveryStatus.DEAD]
        problems = [f"{d.destination}: {d.error}" for d in (*dead, *failed)]
        if error is None:  # after delivery every row has an outcome; a pending one never got it
            unrecorded = [d for d in deliveries if d.status == DeliveryStatus.PENDING]
            failed += unrecorded
            problems += [
                f"{d.destination}: delivery outcome not recorded (internal error, see the log)"
                for d in unrecorded
            ]
        if error is not None:
            problems.insert(0, error)
        # A destination that refused for good must not stop the retries of one that was only
        # down: the job stays retryable while any delivery is; only an unusable job (a permanent
        # error before delivery) is dead at once.
        retryable = (error is not None and transient) or bool(failed)
        unusable = error is not None and not transient

        # Instances that arrived while this attempt ran made a newer job with the whole series;
        # retrying this one would send the older set after it.
        newer = session.scalar(
            select(func.max(Job.id)).where(Job.series_uid == job.series_uid, Job.id > job.id)
        )
        if not problems:
            job.status, job.error = (JobStatus.HELD, hold) if hold else (JobStatus.DONE, None)
        elif retryable and not unusable and newer is not None:
            job.status = JobStatus.CANCELLED
            job.error = f"superseded by job {newer} (this attempt: {'; '.join(problems)})"
        elif retryable and not unusable and job.attempts < policy.max_attempts:
            delay = retry_delay_seconds(job.attempts, policy)
            job.status = JobStatus.FAILED
            job.next_attempt_at = now + timedelta(seconds=delay)
            job.error = "; ".join(problems) + f" (attempt {job.attempts}, retry in {delay:.0f} s)"
        else:
            if retryable and not unusable:
                problems.append(f"gave up after {job.attempts} attempts")
            for delivery in failed:
                delivery.status = DeliveryStatus.DEAD
            job.status = JobStatus.DEAD
            job.error = "; ".join(problems)
        job.lease_owner = None
        job.lease_expires_at = None
        job.updated_at = now
        session.flush()
        return _record(session, job)


def requeue_unstarted(db: Database, job_id: int, owner: str) -> bool:
    """Give back a job whose deliveries never started because the node is stopping: queued
    again at once, and the interrupted attempt does not count against `max_attempts`."""
    now = utcnow()
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.lease_owner != owner or job.status not in ACTIVE_STATUSES:
            return False
        job.status, job.next_attempt_at, job.updated_at = JobStatus.QUEUED, now, now
        job.lease_owner, job.lease_expires_at = None, None
        job.attempts = max(0, job.attempts - 1)
    log.info("job queued again for the next start job=%d", job_id)
    return True


def reclaim_expired_leases(db: Database, max_attempts: int) -> list[int]:
    """Queue again every active job whose worker stopped renewing its lease (it died).

    A job whose workers died `max_attempts` times is dead instead: a series that kills the
    process (out of memory, a crashing decoder) must not be taken up first after every restart.
    """
    now = utcnow()
    with db.session() as session:
        expired = session.scalars(
            select(Job).where(Job.status.in_(ACTIVE_STATUSES), Job.lease_expires_at < now)
        ).all()
        for job in expired:
            job.lease_owner, job.lease_expires_at, job.updated_at = None, None, now
            if job.attempts >= max_attempts:
                job.status = JobStatus.DEAD
                job.error = (
                    f"its worker stopped (crash, kill or out of memory) during each of "
                    f"{job.attempts} attempts; inputs kept, `dicomnode jobs retry {job.id}`"
                )
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.job_id == job.id,
                        Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]),
                    )
                    .values(status=DeliveryStatus.DEAD, updated_at=now)
                )
            else:
                job.status, job.next_attempt_at = JobStatus.QUEUED, now
        outcome = [(job.id, job.status, job.attempts) for job in expired]
    for job_id, status, attempts in outcome:
        if status == JobStatus.DEAD:
            log.error("job dead: its worker stopped during %d attempts job=%d", attempts, job_id)
        else:
            log.warning("job lease expired, queued again job=%d", job_id)
    return [job_id for job_id, _, _ in outcome]


def _existing_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist")
    return job


def retry_job(db: Database, job_id: int) -> JobRecord:
    """Admin: bring a dead, failed or cancelled job back to the queue with fresh attempts."""
    now = utcnow()
    with db.session() as session:
        job = _existing_job(session, job_id)
        allowed = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)
        if job.status not in allowed:
            raise JobStateError(
                f"job {job_id} is {job.status}; only {', '.join(allowed)} jobs can be retried"
            )
        job.status, job.attempts, job.next_attempt_at, job.updated_at = (
            JobStatus.QUEUED,
            0,
            now,
            now,
        )
        session.execute(
            update(Delivery)
            .where(Delivery.job_id == job_id, Delivery.status != DeliveryStatus.DONE)
            .values(status=DeliveryStatus.PENDING, attempts=0, updated_at=now)
        )
        session.flush()
        return _record(session, job)


def release_job(db: Database, job_id: int) -> JobRecord:
    """Admin: send what QA held back; the job runs again and this time forwards everything."""
    now = utcnow()
    with db.session() as session:
        job = _existing_job(session, job_id)
        if job.status != JobStatus.HELD:
            raise JobStateError(f"job {job_id} is {job.status}; only held jobs can be released")
        job.status, job.released, job.attempts = JobStatus.QUEUED, True, 0
        job.error, job.next_attempt_at, job.updated_at = None, now, now
        session.execute(
            update(Delivery)
            .where(Delivery.job_id == job_id)
            .values(status=DeliveryStatus.PENDING, attempts=0, updated_at=now)
        )
        session.flush()
        return _record(session, job)


def cancel_job(db: Database, job_id: int) -> JobRecord:
    """Admin: stop a job that has not finished; a worker holding it discards its result."""
    now = utcnow()
    with db.session() as session:
        job = _existing_job(session, job_id)
        if job.status in (JobStatus.DONE, JobStatus.CANCELLED):
            raise JobStateError(f"job {job_id} is already {job.status}")
        job.status, job.error, job.updated_at = JobStatus.CANCELLED, "cancelled by admin", now
        job.lease_owner = job.lease_expires_at = None
        session.flush()
        return _record(session, job)
