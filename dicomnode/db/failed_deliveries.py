"""Failed jobs by the destination they wait for: which destinations to ask whether they are
back, and the jobs that go at once when one is (`pipeline.recovery`)."""

from datetime import datetime

from sqlalchemy import func, select, update

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, Job
from dicomnode.db.originals_first import WAITS_FOR_ORIGINALS, failed_at
from dicomnode.status import DeliveryStatus, JobStatus


def destinations_waited_for(db: Database) -> tuple[datetime, set[str]]:
    """The database's time, and the destinations a failed job will try again later (not yet
    due, so it waits for them)."""
    with db.session() as session:
        now = db_now(session)
        names = session.scalars(
            select(Delivery.destination)
            .join(Job, Job.id == Delivery.job_id)
            .where(
                Job.status == JobStatus.FAILED,
                Job.next_attempt_at > now,
                Delivery.status == DeliveryStatus.FAILED,
            )
            .distinct()
        )
        return now, set(names)


def bring_failed_forward(db: Database, destination: str, failed_by: datetime) -> int:
    """Every failed job whose delivery to `destination` failed by `failed_by` is due now; how
    many. Not a derived job that only waited there for its originals: their arrival brings
    it forward (`originals_first.wake_derived`), and going first it would wait again."""
    failed_then = failed_at(
        destination,
        Delivery.updated_at <= failed_by,
        func.coalesce(Delivery.error, "").not_like(f"%{WAITS_FOR_ORIGINALS}%"),
    )
    with db.session() as session:
        now = db_now(session)
        woken = session.scalars(
            update(Job)
            .where(Job.status == JobStatus.FAILED, Job.next_attempt_at > now, failed_then)
            .values(next_attempt_at=now)
            .returning(Job.id)
        ).all()
    return len(woken)
