"""A series' originals reach each destination before its derived series.

A radiologist who opens a study whose enhanced series came first has nothing to compare it
with, and a PACS routing rule may act on the first series of a study it meets. In the normal
path the order holds by itself: the originals have a head start and go first in each
destination's queue. After an outage it did not: the originals' job could be on a longer
backoff than its derived job. So a derived series waits, per destination, while the originals
of its series failed to reach it and will be tried again; that brings the originals' next attempt
forward to now, and their arrival brings the derived job's forward in turn.
"""

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, Job
from dicomnode.status import ACTIVE_STATUSES, DeliveryStatus, JobPart, JobStatus

log = logging.getLogger(__name__)

# A derived delivery's error, when it did not go because the originals were not there yet.
WAITS_FOR_ORIGINALS = "waits for the originals of its series"

# An originals job in these states will still try the destinations it failed to reach.
_WILL_RETRY = (JobStatus.QUEUED, JobStatus.FAILED, *ACTIVE_STATUSES)


def waits_for_originals(originals_job: int, destination: str) -> str:
    return (
        f"{WAITS_FOR_ORIGINALS} (job {originals_job}), which have not reached {destination} "
        "yet; sent right after them"
    )


def _owed(session: Session, series_uid: str, destination: str, lock: bool = False) -> int | None:
    """The newest originals job of the series that failed to reach `destination` and will try
    again (`lock`: its delivery row read FOR UPDATE, so that its arrival, written meanwhile,
    waits for the reader's transaction and then sees what it wrote)."""
    query = (
        select(Job.id)
        .join(Delivery, Delivery.job_id == Job.id)
        .where(
            Job.series_uid == series_uid,
            Job.part == JobPart.ORIGINALS,
            Job.status.in_(_WILL_RETRY),
            Delivery.destination == destination,
            Delivery.status == DeliveryStatus.FAILED,
        )
        .order_by(Job.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update(of=Delivery)
    return session.scalar(query)


def originals_owed(db: Database, series_uid: str, destination: str) -> int | None:
    """The originals job `destination` still waits for before the series' derived series may
    go (None: go), its next attempt brought forward to now: the derived series are ready, so
    the originals do not wait out the rest of their backoff first."""
    with db.session() as session:
        owed = _owed(session, series_uid, destination)
        if owed is None:
            return None
        now = db_now(session)
        session.execute(
            update(Job)
            .where(Job.id == owed, Job.status == JobStatus.FAILED, Job.next_attempt_at > now)
            .values(next_attempt_at=now)
        )
    log.info(
        "derived series waits for its originals destination=%s series=%s originals_job=%d",
        destination,
        series_uid,
        owed,
    )
    return owed


def wake_derived(db: Database, series_uid: str, destination: str) -> None:
    """After the series' originals reached `destination`: a derived job of the series waiting
    to be retried there is due now, not at the end of its backoff."""
    failed_there = select(Delivery.job_id).where(
        Delivery.destination == destination, Delivery.status == DeliveryStatus.FAILED
    )
    with db.session() as session:
        now = db_now(session)
        woken = session.scalars(
            update(Job)
            .where(
                Job.series_uid == series_uid,
                Job.part == JobPart.DERIVED,
                Job.status == JobStatus.FAILED,
                Job.next_attempt_at > now,
                Job.id.in_(failed_there),
            )
            .values(next_attempt_at=now)
            .returning(Job.id)
        ).all()
    for job_id in woken:
        log.info(
            "derived job due now: its originals reached the destination job=%d destination=%s",
            job_id,
            destination,
        )


def arrived_meanwhile(session: Session, series_uid: str, waiting: list[str]) -> bool:
    """Whether the originals reached one of the `waiting` destinations (where this derived
    job's attempt waited for them) while the attempt was ending: then `wake_derived` ran before
    the job was failed, found nothing to wake, and the job must make itself due now."""
    return any(_owed(session, series_uid, name, lock=True) is None for name in waiting)
