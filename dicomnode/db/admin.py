"""An admin's side of the job table: retry, release and cancel (`dicomnode jobs ...`).

Each action checks the job's state against the tables in `transitions` and raises
`JobStateError`, naming the job and its state, when the action does not apply.
"""

from sqlalchemy import update
from sqlalchemy.orm import Session

from dicomnode.db.engine import Database
from dicomnode.db.jobs import job_record
from dicomnode.db.models import Delivery, Job, utcnow
from dicomnode.db.records import JobRecord
from dicomnode.db.transitions import NOT_CANCELLABLE, RELEASABLE, RETRYABLE
from dicomnode.errors import JobStateError
from dicomnode.status import DeliveryStatus, JobStatus


def _existing_job(session: Session, job_id: int) -> Job:
    # Locked: a worker finishing its attempt at the same moment waits, then sees the new state.
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist")
    return job


def _queue_again(session: Session, job: Job, *, resend_delivered: bool) -> None:
    """Back to the queue now with fresh attempts; its deliveries pending again (those already
    done too, when `resend_delivered`)."""
    now = utcnow()
    job.status, job.attempts, job.next_attempt_at, job.updated_at = JobStatus.QUEUED, 0, now, now
    reset = update(Delivery).where(Delivery.job_id == job.id)
    if not resend_delivered:
        reset = reset.where(Delivery.status != DeliveryStatus.DONE)
    session.execute(reset.values(status=DeliveryStatus.PENDING, attempts=0, updated_at=now))


def retry_job(db: Database, job_id: int) -> JobRecord:
    """Admin: bring a dead, failed or cancelled job back to the queue with fresh attempts."""
    with db.session() as session:
        job = _existing_job(session, job_id)
        if job.status not in RETRYABLE:
            raise JobStateError(
                f"job {job_id} is {job.status}; only {', '.join(RETRYABLE)} jobs can be retried"
            )
        _queue_again(session, job, resend_delivered=False)
        session.flush()
        return job_record(session, job)


def release_job(db: Database, job_id: int) -> JobRecord:
    """Admin: send what QA held back; the job runs again and this time forwards everything."""
    with db.session() as session:
        job = _existing_job(session, job_id)
        if job.status not in RELEASABLE:
            raise JobStateError(f"job {job_id} is {job.status}; only held jobs can be released")
        job.released, job.error = True, None
        _queue_again(session, job, resend_delivered=True)
        session.flush()
        return job_record(session, job)


def cancel_job(db: Database, job_id: int) -> JobRecord:
    """Admin: stop a job that has not finished; a worker holding it discards its result."""
    now = utcnow()
    with db.session() as session:
        job = _existing_job(session, job_id)
        if job.status in NOT_CANCELLABLE:
            raise JobStateError(f"job {job_id} is already {job.status}")
        job.status, job.error, job.updated_at = JobStatus.CANCELLED, "cancelled by admin", now
        job.lease_owner = job.lease_expires_at = None
        session.flush()
        return job_record(session, job)
