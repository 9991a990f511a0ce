"""A job's history (every attempt's outcome, every admin action) and the admin actions the node
has yet to log.

`jobs.error` holds only the latest error, and a retry starts the attempts again from 0; the
history keeps what came before (`dicomnode jobs show`). An admin action is made by the CLI, a
process of its own without the node's log; it is written here and the node logs it.
"""

import enum
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dicomnode.db.engine import Database
from dicomnode.db.models import JobEvent
from dicomnode.db.records import JobEventRecord


class EventKind(enum.StrEnum):
    ATTEMPT = "attempt"  # a worker's attempt ended (status: the state it led to)
    LEASE_LAPSED = "lease lapsed"  # its worker stopped during the attempt
    RETRY = "retry"  # the admin actions of `dicomnode jobs ...` and `dicomnode purge`
    RELEASE = "release"
    CANCEL = "cancel"
    RESEND = "resend"
    DISCARD = "discard"
    PURGE = "purge"
    EXPIRE = "expire"  # retention cancelled a job held past retention.held_days


def record_event(
    session: Session,
    job_id: int | None,
    kind: EventKind,
    *,
    attempt: int | None = None,
    status: str | None = None,
    detail: str | None = None,
    user: str | None = None,
) -> None:
    """Add one line to a job's history; an admin action (`user` given) waits for the node's log."""
    session.add(
        JobEvent(
            job_id=job_id,
            kind=kind,
            attempt=attempt,
            status=status,
            detail=detail,
            user=user,
            logged=user is None,
        )
    )


# The admin actions that queue a job afresh (its attempts from 0).
_REQUEUED = (EventKind.RETRY, EventKind.RESEND, EventKind.RELEASE)


def lapses_since_requeued(session: Session, job_id: int) -> int:
    """How many of the job's attempts its worker died in since an admin last queued it afresh
    (or since it was made)."""
    last_requeued = (
        select(func.max(JobEvent.id))
        .where(JobEvent.job_id == job_id, JobEvent.kind.in_(_REQUEUED))
        .scalar_subquery()
    )
    lapsed = select(func.count()).where(
        JobEvent.job_id == job_id,
        JobEvent.kind == EventKind.LEASE_LAPSED,
        JobEvent.id > func.coalesce(last_requeued, 0),
    )
    return int(session.scalar(lapsed) or 0)


def _record(event: JobEvent) -> JobEventRecord:
    return JobEventRecord(
        event.at,
        event.kind,
        event.job_id,
        event.attempt,
        event.status,
        event.detail,
        event.user,
    )


def job_histories(
    session: Session, job_ids: Sequence[int]
) -> dict[int, tuple[JobEventRecord, ...]]:
    """Each job's events, oldest first, in one query (a listing of many jobs)."""
    found: dict[int, list[JobEventRecord]] = {job_id: [] for job_id in job_ids}
    events = session.scalars(
        select(JobEvent).where(JobEvent.job_id.in_(job_ids)).order_by(JobEvent.id)
    )
    for event in events:
        found[event.job_id].append(_record(event))  # type: ignore[index]
    return {job_id: tuple(records) for job_id, records in found.items()}


def forget_history(session: Session, job_ids: list[int]) -> None:
    """Delete the events of jobs that are deleted (a purge), except admin actions not yet
    logged: the node logs them first."""
    session.execute(delete(JobEvent).where(JobEvent.job_id.in_(job_ids), JobEvent.logged.is_(True)))


def take_unlogged_admin_events(db: Database) -> list[JobEventRecord]:
    """The admin actions no node has logged yet, marked logged (each is logged once, also with
    several nodes on one database)."""
    with db.session() as session:
        query = select(JobEvent).where(JobEvent.logged.is_(False)).order_by(JobEvent.id)
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        events = list(session.scalars(query))
        if events:
            session.execute(
                update(JobEvent)
                .where(JobEvent.id.in_([event.id for event in events]))
                .values(logged=True)
            )
        return [_record(event) for event in events]


def record_admin_action(
    db: Database, kind: EventKind, user: str, detail: str, job_id: int | None = None
) -> None:
    """An admin action that is not about one job's state (`dicomnode purge`)."""
    with db.session() as session:
        record_event(session, job_id, kind, detail=detail, user=user)
