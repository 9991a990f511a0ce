"""A series' originals reach each destination before its derived series.

A radiologist who opens a study whose enhanced series came first has nothing to compare it
with, and a PACS routing rule may act on the first series of a study it meets. In the normal
path the order holds by itself: the originals have a head start and go first in each
destination's queue. After an outage it did not: the originals' job could be on a longer
backoff than its derived job. So a derived series waits, per destination, while the
destination has none of the originals of its series and they will be tried again there, and
their arrival brings the derived job forward. The originals keep their own backoff (a wait
does not bring them forward: a destination that answers a C-ECHO may still refuse their
stores, and each extra attempt would be one fewer before they are given up); one that was down
and is back is found by the recovery probe. Waiting spends none of the derived job's attempts
(`transitions.after_attempt`): it looks again after the originals' next one.
"""

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Exists, func, select, update
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
        f"{WAITS_FOR_ORIGINALS} (job {originals_job}), none of which has reached {destination} "
        "yet; sent once they are there"
    )


def _owed(session: Session, series_uid: str, destination: str, lock: bool = False) -> int | None:
    """The newest originals job of the series that failed to reach `destination`, which has
    stored none of its instances, and will try again (`lock`: its delivery row read FOR
    UPDATE, so that its arrival, written meanwhile, waits for the reader's transaction and
    then sees what it wrote). A destination with some of them (the others unreadable, or its
    Storage Commitment reports lost) has originals to show beside the derived series."""
    query = (
        select(Job.id)
        .join(Delivery, Delivery.job_id == Job.id)
        .where(
            Job.series_uid == series_uid,
            Job.part == JobPart.ORIGINALS,
            Job.status.in_(_WILL_RETRY),
            Delivery.destination == destination,
            Delivery.status == DeliveryStatus.FAILED,
            Delivery.sent == 0,
        )
        .order_by(Job.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update(of=Delivery)
    return session.scalar(query)


def failed_at(destination: str, *conditions: ColumnElement[bool]) -> Exists:
    """A job's delivery to `destination` failed, for now (found by its index on job_id), and
    meets `conditions`: a condition on Job in an UPDATE of jobs."""
    return (
        select(Delivery.id)
        .where(
            Delivery.job_id == Job.id,
            Delivery.destination == destination,
            Delivery.status == DeliveryStatus.FAILED,
            *conditions,
        )
        .exists()
    )


def originals_owed(db: Database, series_uid: str, destination: str) -> int | None:
    """The originals job `destination` waits for before the series' derived series may go
    there (None: they may go)."""
    with db.session() as session:
        return _owed(session, series_uid, destination)


def originals_next_attempt(
    session: Session, series_uid: str, destinations: Sequence[str]
) -> datetime | None:
    """When the originals a derived job waits for at `destinations` are next tried, the
    soonest of them (None: none is owed there any more). A wait is not an attempt
    (`transitions.after_attempt`): the derived job looks again no sooner than they are tried,
    when they may arrive."""
    owed = [job for name in destinations if (job := _owed(session, series_uid, name))]
    if not owed:
        return None
    return session.scalar(select(func.min(Job.next_attempt_at)).where(Job.id.in_(owed)))


def wake_derived(db: Database, series_uid: str, destination: str) -> None:
    """After the series' originals reached `destination`: a derived job of the series waiting
    to be retried there is due now, not at the end of its backoff."""
    with db.session() as session:
        now = db_now(session)
        woken = session.scalars(
            update(Job)
            .where(
                Job.series_uid == series_uid,
                Job.part == JobPart.DERIVED,
                Job.status == JobStatus.FAILED,
                Job.next_attempt_at > now,
                failed_at(destination),
            )
            .values(next_attempt_at=now)
            .returning(Job.id)
        ).all()
    for job_id in woken:
        log_woken(job_id, destination)


def log_woken(job_id: int, destination: str) -> None:
    log.info(
        "derived job due now: its originals reached the destination job=%d destination=%s",
        job_id,
        destination,
    )


def arrived_meanwhile(session: Session, series_uid: str, waiting: list[str]) -> str | None:
    """The first of the `waiting` destinations (where this derived job's attempt waited for
    the originals) that they reached while the attempt was ending, if any: then `wake_derived`
    ran before the job was failed, found nothing to wake, and the job must make itself due."""
    return next((n for n in waiting if _owed(session, series_uid, n, lock=True) is None), None)
