"""An admin's side of the job table: retry, release, cancel and resend (`dicomnode jobs ...`).

Each action asks `transitions.admin_refusal` whether it applies to the job's state and raises
`JobStateError`, naming the job and its state, when it does not. Each one done is written to the
job's history with the admin's name, for the node to log.
"""

import json
from collections.abc import Collection, Mapping
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dicomnode.db.clock import db_now
from dicomnode.db.commitments import forget_commitments
from dicomnode.db.delivered import forget_delivered
from dicomnode.db.engine import Database
from dicomnode.db.history import EventKind, record_event
from dicomnode.db.instances import destination_takes
from dicomnode.db.jobs import NOTHING_MADE, job_record
from dicomnode.db.models import Delivery, Job
from dicomnode.db.records import JobRecord
from dicomnode.db.transitions import NOT_CONFIGURED, AdminAction, admin_refusal
from dicomnode.errors import JobStateError
from dicomnode.status import DeliveryStatus, JobPart, JobStatus, Replay


def _existing_job(session: Session, job_id: int) -> Job:
    # Locked: a worker finishing its attempt at the same moment waits, then sees the new state.
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist (`dicomnode jobs list` lists them)")
    return job


def _check(action: AdminAction, job: Job, newer_job: int | None = None) -> None:
    refused = admin_refusal(action, job.id, JobStatus(job.status), newer_job)
    if refused:
        raise JobStateError(refused)


def _fresh_attempts(job: Job, now: datetime) -> None:
    """Queued now, its attempts (and those that ended before delivery) counted from zero."""
    job.status, job.next_attempt_at, job.updated_at = JobStatus.QUEUED, now, now
    job.attempts = job.failures_before_delivery = 0


def _queue_again(
    session: Session, job: Job, configured: Collection[str], *, resend_delivered: bool
) -> list[str]:
    """Back to the queue now with fresh attempts; its deliveries pending again (those already
    done too, when `resend_delivered`), and sent whole: an admin's action may follow a PACS
    that lost or deleted part of what it had. A delivery the node found no destination for
    (`transitions.NOT_CONFIGURED`) is dropped when the settings the admin's command reads do
    not name it either (taken out: the job can finish with the others), and retried when they
    do (put in, and the node restarted since): the destinations dropped."""
    now = db_now(session)
    _fresh_attempts(job, now)
    unknown = session.scalars(
        select(Delivery).where(
            Delivery.job_id == job.id,
            Delivery.status == DeliveryStatus.DEAD,
            Delivery.error.contains(NOT_CONFIGURED, autoescape=True),
            Delivery.destination.not_in(configured),
        )
    ).all()
    for delivery in unknown:
        session.delete(delivery)
    session.flush()
    reset = update(Delivery).where(Delivery.job_id == job.id)
    if not resend_delivered:
        reset = reset.where(Delivery.status != DeliveryStatus.DONE)
    forget_delivered(session, [job.id])
    session.execute(reset.values(status=DeliveryStatus.PENDING, attempts=0, updated_at=now))
    return [delivery.destination for delivery in unknown]


def _dropped(destinations: list[str]) -> str:
    if not destinations:
        return ""
    return f"; dropped the deliveries to {', '.join(map(repr, destinations))} (not configured)"


def _done(session: Session, job: Job, kind: EventKind, user: str, detail: str) -> JobRecord:
    session.flush()
    record_event(session, job.id, kind, status=job.status, detail=detail, user=user)
    return job_record(session, job)


def retry_job(db: Database, job_id: int, configured: Collection[str], user: str = "") -> JobRecord:
    """Admin: bring a dead, failed or cancelled job back to the queue with fresh attempts (a job
    that was releasing or resending goes on doing that, not processing anew); `configured`: the
    destinations in the settings (`_queue_again`)."""
    with db.session() as session:
        job = _existing_job(session, job_id)
        _check(AdminAction.RETRY, job)
        was = job.status
        dropped = _queue_again(session, job, configured, resend_delivered=False)
        detail = f"queued again (was {was}){_dropped(dropped)}"
        return _done(session, job, EventKind.RETRY, user, detail)


def release_job(
    db: Database, job_id: int, configured: Collection[str], user: str = ""
) -> JobRecord:
    """Admin: send the derived series QA held back, as they were made (not processed again),
    to every destination the job has; what the job already sent is not sent again.
    `configured`: as `retry_job`'s."""
    with db.session() as session:
        job = _existing_job(session, job_id)
        _check(AdminAction.RELEASE, job)
        job.released, job.error, job.replay = True, None, Replay.HELD
        dropped = _queue_again(session, job, configured, resend_delivered=True)
        detail = f"held derived series queued to send{_dropped(dropped)}"
        return _done(session, job, EventKind.RELEASE, user, detail)


def cancel_job(db: Database, job_id: int, user: str = "") -> JobRecord:
    """Admin: stop a job that has not finished; a worker holding it discards its result."""
    with db.session() as session:
        now = db_now(session)
        job = _existing_job(session, job_id)
        _check(AdminAction.CANCEL, job)
        was = job.status
        job.status, job.error, job.updated_at = JobStatus.CANCELLED, "cancelled by admin", now
        job.lease_owner = job.lease_expires_at = None
        return _done(session, job, EventKind.CANCEL, user, f"cancelled (was {was})")


def resend_job(
    db: Database,
    job_id: int,
    configured: list[str],
    destination: str | None = None,
    user: str = "",
    *,
    takes: Mapping[str, Collection[str]] | None = None,
) -> JobRecord:
    """Admin: send a done job's series again (an originals job its instances, a derived job its
    derived series and reports, as they were made), to every destination it had or only to
    `destination` (one of `configured`: also one the job never had, e.g. a new PACS, if it
    takes the job's part: `takes`, `Destination.send`)."""
    with db.session() as session:
        job = _existing_job(session, job_id)
        newer = session.scalar(
            select(func.max(Job.id)).where(
                Job.series_uid == job.series_uid, Job.part == job.part, Job.id > job.id
            )
        )
        _check(AdminAction.RESEND, job, newer)
        if destination is not None and destination not in configured:
            raise JobStateError(
                f"destination {destination!r} is not configured "
                f"(configured: {', '.join(configured) or 'none'})"
            )
        if destination is not None and not destination_takes(takes, destination, job.part):
            raise JobStateError(
                f"destination {destination!r} does not take {job.part} series (its send: "
                f"{', '.join((takes or {})[destination])})"
            )
        now = db_now(session)
        deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job.id)).all()
        if destination is None and not deliveries:
            raise JobStateError(
                f"job {job_id} had no destination to send to; name one with --destination"
            )
        if destination is not None and destination not in {d.destination for d in deliveries}:
            session.add(Delivery(job_id=job.id, destination=destination))
        # Without --destination: those it had that still take its part (`Destination.send`).
        again = [
            d
            for d in deliveries
            if destination in (None, d.destination)
            and destination_takes(takes, d.destination, job.part)
        ]
        if destination is None and not again:
            raise JobStateError(
                f"no destination job {job_id} had takes {job.part} series now (their send "
                "changed); name one with --destination"
            )
        for delivery in again:
            delivery.status, delivery.attempts, delivery.updated_at = (
                DeliveryStatus.PENDING,
                0,
                now,
            )
        _fresh_attempts(job, now)
        # What a destination confirmed keeping, or stored, is not sent again on a retry; a
        # resend is asked for because the PACS no longer has it, so it sends everything (and
        # asks for commitment again).
        forget_commitments(session, [job.id], destination)
        forget_delivered(session, [job.id], destination)
        job.error = None
        where = f"to {destination or ', '.join(d.destination for d in again)}"
        if job.part == JobPart.DERIVED and NOTHING_MADE in json.loads(job.outputs or "{}"):
            # Never enhanced (done while none of its destinations took derived series): there
            # is nothing in the outbox to send again, so it is made now.
            job.replay = None
            detail = f"queued to enhance (never done before) and send {where}"
            return _done(session, job, EventKind.RESEND, user, detail)
        job.replay = Replay.SENT
        return _done(session, job, EventKind.RESEND, user, f"queued to send again {where}")
