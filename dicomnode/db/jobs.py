"""A worker's side of the job table: claiming under a lease, progress, and ending an attempt.

Every transition made by a worker names the lease owner in its WHERE clause: a worker whose lease
lapsed (and whose job was reclaimed) or whose job an admin cancelled changes nothing. Where a
row is read before it is written, it is read `FOR UPDATE` (PostgreSQL; SQLite has one writer at a
time anyway), so two processes never both act on what they saw. Which state
follows an attempt is decided by `transitions` (pure); this module gathers the facts and applies
the answer. Admin actions are in `admin`.
"""

import json
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, Update, func, select, update
from sqlalchemy.orm import Session

from dicomnode.config import RetrySettings
from dicomnode.db.clock import db_now
from dicomnode.db.delivered import note_delivered
from dicomnode.db.engine import Database
from dicomnode.db.history import EventKind, job_histories, lapses_since_requeued, record_event
from dicomnode.db.models import Delivery, Instance, Job, JobInstance, Series
from dicomnode.db.originals_first import (
    WAITS_FOR_ORIGINALS,
    arrived_meanwhile,
    log_woken,
    originals_next_attempt,
)
from dicomnode.db.records import DeliveryRecord, JobEventRecord, JobRecord, SpooledInstance
from dicomnode.db.transitions import (
    AttemptOutcome,
    DeliveryOutcome,
    after_attempt,
    after_lapsed_lease,
)
from dicomnode.status import ACTIVE_STATUSES, DeliveryStatus, JobPart, JobStatus

_ORIGINALS_IN_FLIGHT = (JobStatus.QUEUED, *ACTIVE_STATUSES)

log = logging.getLogger(__name__)


# Jobs read per query by a listing: SQLite takes at most 32,766 bound parameters per statement.
_JOBS_PER_READ = 1000


def job_record(session: Session, job: Job) -> JobRecord:
    """The plain record of a job row, with its deliveries, input count and history."""
    return job_records(session, [job])[0]


def job_records(session: Session, jobs: Sequence[Job]) -> list[JobRecord]:
    """The plain records of job rows, in their order: three queries per thousand jobs, not per
    job (`jobs list --limit 100000` on a year's table took minutes)."""
    records: list[JobRecord] = []
    for first in range(0, len(jobs), _JOBS_PER_READ):
        chunk = jobs[first : first + _JOBS_PER_READ]
        ids = [job.id for job in chunk]
        counts = dict(
            session.execute(
                select(JobInstance.job_id, func.count())
                .where(JobInstance.job_id.in_(ids))
                .group_by(JobInstance.job_id)
            ).all()
        )
        deliveries: dict[int, list[DeliveryRecord]] = {job_id: [] for job_id in ids}
        for d in session.scalars(
            select(Delivery).where(Delivery.job_id.in_(ids)).order_by(Delivery.id)
        ):
            deliveries[d.job_id].append(
                DeliveryRecord(
                    d.destination,
                    DeliveryStatus(d.status),
                    d.attempts,
                    d.sent,
                    d.error,
                    d.updated_at,
                )
            )
        histories = job_histories(session, ids)
        records.extend(
            _record(job, counts.get(job.id, 0), deliveries[job.id], histories[job.id])
            for job in chunk
        )
    return records


def _record(
    job: Job,
    instances: int,
    deliveries: Sequence[DeliveryRecord],
    history: tuple[JobEventRecord, ...],
) -> JobRecord:
    return JobRecord(
        id=job.id,
        study_uid=job.study_uid,
        series_uid=job.series_uid,
        part=JobPart(job.part),
        status=JobStatus(job.status),
        attempts=job.attempts,
        claims=job.claims,
        instances=instances,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        next_attempt_at=job.next_attempt_at,
        lease_owner=job.lease_owner,
        deliveries=tuple(deliveries),
        details=json.loads(job.details) if job.details else None,
        released=bool(job.released),
        claimed_by=job.claimed_by,
        replay=job.replay,
        outputs=json.loads(job.outputs) if job.outputs else None,
        history=history,
    )


def _rows_changed(session: Session, statement: Update) -> int:
    """How many rows an UPDATE touched (0: the job is no longer in the state it named)."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount


def get_job(db: Database, job_id: int) -> JobRecord | None:
    with db.session() as session:
        job = session.get(Job, job_id)
        return job_record(session, job) if job is not None else None


def job_ids(db: Database) -> set[int]:
    """Every job id in the table (for `dicomnode doctor`'s outbox check)."""
    with db.session() as session:
        return set(session.scalars(select(Job.id)))


def job_ids_in(db: Database, status: JobStatus) -> list[int]:
    """The ids of every job in `status`, oldest first (what a bulk admin action goes through)."""
    with db.session() as session:
        return list(session.scalars(select(Job.id).where(Job.status == status).order_by(Job.id)))


def count_jobs(db: Database, status: JobStatus | None = None) -> int:
    """How many jobs there are (in `status`, when given): what a limited listing leaves out."""
    with db.session() as session:
        query = select(func.count()).select_from(Job)
        if status is not None:
            query = query.where(Job.status == status)
        return int(session.scalar(query) or 0)


def list_jobs(
    db: Database,
    status: JobStatus | None = None,
    limit: int = 100,
    series_uid: str | None = None,
) -> list[JobRecord]:
    """Newest first; only those in `status`, or of one series, when given."""
    with db.session() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Job.status == status)
        if series_uid is not None:
            query = query.where(Job.series_uid == series_uid)
        return job_records(session, session.scalars(query).all())


def claim_next_job(
    db: Database, owner: str, lease_seconds: float, part: JobPart
) -> JobRecord | None:
    """Take the oldest due job of `part` (queued, or failed and due again) under a lease."""
    with db.session() as session:
        now = db_now(session)
        due = (
            select(Job.id)
            .where(
                Job.part == part,
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
                claims=Job.claims + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                claimed_by=owner,
                updated_at=now,
            )
        )
        job = session.get_one(Job, job_id)
        session.refresh(job)
        return job_record(session, job)


def renew_lease(db: Database, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend a held lease; False means the job is no longer ours (reclaimed or cancelled)."""
    with db.session() as session:
        now = db_now(session)
        changed = _rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE_STATUSES))
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds)),
        )
        return changed == 1


def holds_lease(db: Database, job_id: int, owner: str) -> bool:
    """Whether `owner` still holds the job (not cancelled, reclaimed or claimed again)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        return job is not None and job.lease_owner == owner and job.status in ACTIVE_STATUSES


def set_active_status(db: Database, job_id: int, owner: str, status: JobStatus) -> bool:
    """Move a held job between processing and forwarding."""
    with db.session() as session:
        changed = _rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE_STATUSES))
            .values(status=status, updated_at=db_now(session)),
        )
        return changed == 1


def _update_held_job(db: Database, job_id: int, owner: str, **values: Any) -> bool:
    """Set columns of a job `owner` still holds (and its `updated_at`); False when it no
    longer does."""
    with db.session() as session:
        changed = _rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(**values, updated_at=db_now(session)),
        )
        return changed == 1


def record_job_details(db: Database, job_id: int, owner: str, details: dict[str, Any]) -> bool:
    """Store what this processing attempt did (shown by `dicomnode jobs show`)."""
    return _update_held_job(db, job_id, owner, details=json.dumps(details))


# The outputs of a derived job finished without being enhanced (none of its destinations took
# derived series any more): a resend has nothing to send again, and enhances it instead.
NOTHING_MADE = "nothing_made"


def record_job_outputs(db: Database, job_id: int, owner: str, outputs: dict[str, Any]) -> bool:
    """Store what this attempt held back and sent unenhanced (for a later release or resend)."""
    return _update_held_job(db, job_id, owner, outputs=json.dumps(outputs))


def reports_made_before(db: Database, series_uid: str, job_id: int) -> dict[str, list[str]]:
    """The metrics reports earlier derived jobs of the series made, by report series: a series
    that grew since gets a report of another UID, which names these as its predecessors (the
    PACS keeps them beside it). Whatever their state: one that failed, is held or still being
    sent may yet reach the PACS (a retry, a release), and a predecessor the PACS never got is
    named harmlessly. From each job's details, oldest first."""
    with db.session() as session:
        details = session.scalars(
            select(Job.details)
            .where(
                Job.series_uid == series_uid,
                Job.part == JobPart.DERIVED,
                Job.id < job_id,
                Job.details.is_not(None),
            )
            .order_by(Job.id)
        ).all()
    sent: dict[str, list[str]] = {}
    for text in details:
        for method in json.loads(text or "{}").get("methods", []):
            series, sop = method.get("report_series_uid"), method.get("report_sop_uid")
            if not (series and sop):  # an older node's details may lack them: nothing to name
                continue
            reports = sent.setdefault(series, [])
            if sop not in reports:
                reports.append(sop)
    return sent


def job_inputs(db: Database, job_id: int) -> list[SpooledInstance]:
    """A job's instances in SOP Instance UID order: the same on SQLite and PostgreSQL, so an
    attempt sends (and a series is read) in one order whatever the database."""
    with db.session() as session:
        rows = session.execute(
            select(Instance)
            .join(JobInstance, JobInstance.sop_instance_uid == Instance.sop_instance_uid)
            .where(JobInstance.job_id == job_id)
            .order_by(Instance.sop_instance_uid)
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
    owner: str,
    destination: str,
    status: DeliveryStatus,
    sent: int,
    error: str | None,
    stored: Sequence[str] = (),
    peer: str = "",
) -> bool:
    """A delivery's outcome, written only while `owner` holds the job (False: it no longer
    does). An attempt whose lease lapsed may still finish sending; its outcome must not
    overwrite the row of the attempt that took the job over, which is judged by it.
    `stored`: the instances the destination, then `peer`, took on this attempt (not sent again
    by the next; `db/delivered.py`)."""
    held = select(Job.id).where(Job.id == job_id, Job.lease_owner == owner).exists()
    with db.session() as session:
        changed = _rows_changed(
            session,
            update(Delivery)
            .where(Delivery.job_id == job_id, Delivery.destination == destination, held)
            .values(
                status=status,
                sent=sent,
                error=error,
                attempts=Delivery.attempts + 1,
                updated_at=db_now(session),
            ),
        )
        if changed == 1:
            note_delivered(session, job_id, destination, peer, status, stored)
        return changed == 1


def finish_attempt(
    db: Database,
    job_id: int,
    owner: str,
    policy: RetrySettings,
    error: str | None = None,
    transient: bool = True,
    hold: str | None = None,
    receive_only: bool = False,
) -> JobRecord | None:
    """Close a worker's attempt: done (or held, or stored), failed (retry later) or dead.

    `error` is a failure before delivery (e.g. unreadable inputs); `transient` says whether a
    later attempt may fix it; `hold` is why a successful attempt kept outputs back for an admin;
    `receive_only` (node.receive_only) makes a job without deliveries done, not stored.
    Returns None when the job was no longer held by `owner`.
    """
    with db.session() as session:
        now = db_now(session)
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.status not in ACTIVE_STATUSES:
            log.warning("job lease lost, result discarded job=%d owner=%s", job_id, owner)
            return None
        deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).all()
        outcome = AttemptOutcome(
            deliveries=tuple(
                DeliveryOutcome(
                    d.destination,
                    DeliveryStatus(d.status),
                    d.error,
                    waits_for_originals=job.part == JobPart.DERIVED and _waits(d),
                    attempts=d.attempts,
                )
                for d in deliveries
            ),
            error=error,
            transient=transient,
            hold=hold,
            receive_only=receive_only,
        )
        newer = session.scalar(
            select(func.max(Job.id)).where(
                Job.series_uid == job.series_uid, Job.part == job.part, Job.id > job.id
            )
        )
        if error is not None:
            job.failures_before_delivery += 1
        transition = after_attempt(
            outcome,
            job.attempts,
            policy,
            newer,
            ended_before_delivery=job.failures_before_delivery,
        )
        job.status, job.error = transition.status, transition.error
        if not transition.spent:
            job.attempts -= 1
        if transition.retry_in_seconds is not None:
            job.next_attempt_at = now + timedelta(seconds=transition.retry_in_seconds)
            if not transition.spent:  # tried again when they arrive, or after their next try
                job.next_attempt_at = max(
                    job.next_attempt_at,
                    originals_next_attempt(session, job.series_uid, _waiting_at(deliveries))
                    or job.next_attempt_at,
                )
            arrived = _originals_came_meanwhile(session, job, deliveries)
            if arrived is not None:
                job.next_attempt_at = now
                log_woken(job.id, arrived)
        for delivery in deliveries:
            if delivery.destination in transition.deliveries_given_up:
                delivery.status = DeliveryStatus.DEAD
        if transition.status == JobStatus.DONE:
            job.replay = None  # the release or resend is sent; a next one is asked for anew
        job.lease_owner = None
        job.lease_expires_at = None
        job.updated_at = now
        record_event(
            session,
            job.id,
            EventKind.ATTEMPT,
            attempt=job.attempts,
            status=transition.status,
            detail=transition.error,
        )
        session.flush()
        return job_record(session, job)


def _originals_came_meanwhile(
    session: Session, job: Job, deliveries: Sequence[Delivery]
) -> str | None:
    """Where the originals arrived as this derived job's attempt, which waited for them there,
    ended (`originals_first`): the job is due at once. None: nowhere."""
    if job.part != JobPart.DERIVED:
        return None
    waiting = _waiting_at(deliveries)
    return arrived_meanwhile(session, job.series_uid, waiting) if waiting else None


def _waits(delivery: Delivery) -> bool:
    """The delivery failed only because the originals of its series are not there yet."""
    return delivery.status == DeliveryStatus.FAILED and WAITS_FOR_ORIGINALS in (
        delivery.error or ""
    )


def _waiting_at(deliveries: Sequence[Delivery]) -> list[str]:
    """The destinations where a derived job's attempt waited for its originals."""
    return [d.destination for d in deliveries if _waits(d)]


def requeue_unstarted(db: Database, job_id: int, owner: str) -> bool:
    """Give back a job whose deliveries never started because the node is stopping: queued
    again at once, and the interrupted attempt does not count against `max_attempts`."""
    with db.session() as session:
        now = db_now(session)
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.lease_owner != owner or job.status not in ACTIVE_STATUSES:
            return False
        job.status, job.next_attempt_at, job.updated_at = JobStatus.QUEUED, now, now
        job.lease_owner, job.lease_expires_at = None, None
        job.attempts = max(0, job.attempts - 1)
        series = job.series_uid
    log.info("job queued again for the next start job=%d series=%s", job_id, series)
    return True


def reclaim_expired_leases(
    db: Database, max_attempts: int, gone: Callable[[str], bool] | None = None
) -> list[int]:
    """Queue again every active job whose worker stopped renewing its lease (it died); with
    `gone`, instead every one whose lease owner `gone` says is a process that no longer runs
    (a node restarted after a forced stop need not wait out its old leases).

    A job whose workers died MAX_LAPSES times, or `max_attempts` if fewer (since an admin last
    queued it), is dead instead: a series that kills the process (out of memory, a crashing
    decoder) must not be taken up first after every restart.
    """
    with db.session() as session:
        now = db_now(session)
        # Several processes reap: each takes the rows no other is reaping, and a job claimed
        # again meanwhile no longer matches (PostgreSQL re-reads a locked row's new version).
        lapsed = Job.lease_expires_at < now
        candidates = session.scalars(
            select(Job)
            .where(
                Job.status.in_(ACTIVE_STATUSES),
                lapsed if gone is None else Job.lease_owner.is_not(None),
            )
            .with_for_update(skip_locked=True)
        ).all()
        expired = [job for job in candidates if gone is None or gone(job.lease_owner or "")]
        owners = {job.id: job.lease_owner for job in expired}
        lapses: dict[int, int] = {}
        for job in expired:
            lapses[job.id] = lapses_since_requeued(session, job.id) + 1  # this one too
            transition = after_lapsed_lease(job.id, lapses[job.id], max_attempts)
            job.lease_owner, job.lease_expires_at, job.updated_at = None, None, now
            job.status = transition.status
            record_event(
                session,
                job.id,
                EventKind.LEASE_LAPSED,
                attempt=job.attempts,
                status=transition.status,
                detail=transition.error or "its worker stopped during the attempt; queued again",
            )
            if transition.status == JobStatus.QUEUED:
                # Not held against its attempts (its lapses are bounded apart), as a job given
                # back at a stop: what failed was the process, not the job.
                job.attempts = max(0, job.attempts - 1)
                job.next_attempt_at = now
            else:
                job.error = transition.error
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.job_id == job.id,
                        Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]),
                    )
                    .values(status=DeliveryStatus.DEAD, updated_at=now)
                )
        outcome = [(job.id, job.status, job.series_uid) for job in expired]
    for job_id, status, series in outcome:
        if status == JobStatus.DEAD:
            log.error(
                "job dead: its worker stopped during %d of its attempts job=%d series=%s",
                lapses[job_id],
                job_id,
                series,
            )
        elif gone is not None:
            log.warning(
                "job's worker process is gone, queued again job=%d series=%s lease=%s",
                job_id,
                series,
                owners[job_id],
            )
        else:
            log.warning("job lease expired, queued again job=%d series=%s", job_id, series)
    return [job_id for job_id, _, _ in outcome]


def originals_in_flight(db: Database, series_uid: str) -> bool:
    """Whether an originals job of the series is queued or being sent (not failed: a PACS that
    is down does not hold the enhancement up)."""
    with db.session() as session:
        found = session.scalar(
            select(Job.id)
            .where(
                Job.series_uid == series_uid,
                Job.part == JobPart.ORIGINALS,
                Job.status.in_(_ORIGINALS_IN_FLIGHT),
            )
            .limit(1)
        )
    return found is not None


def pull_back_future_times(db: Database, lease_seconds: float) -> int:
    """After this host's clock stepped back, on SQLite (whose clock it is): what was stamped
    before the step lies ahead of the new time, and whatever waits for it would wait the step
    out (a job queued before it not claimed, a series not completed, a dead worker's lease not
    reaped). Each such time comes back to now (a retry may then come early, by the step at
    most); how many rows changed. Idempotent: every process on the host may do it."""
    with db.session() as session:
        now = db_now(session)
        lease_end = now + timedelta(seconds=lease_seconds)
        waiting = Job.status.in_([JobStatus.QUEUED, JobStatus.FAILED])
        statements = (
            update(Job).where(waiting, Job.next_attempt_at > now).values(next_attempt_at=now),
            update(Job).where(Job.lease_expires_at > lease_end).values(lease_expires_at=lease_end),
            update(Series)
            .where(Series.pending.is_(True), Series.last_received_at > now)
            .values(last_received_at=now),
            update(Series)
            .where(Series.pending.is_(True), Series.released_at > now)
            .values(released_at=now),
        )
        return sum(_rows_changed(session, statement) for statement in statements)
