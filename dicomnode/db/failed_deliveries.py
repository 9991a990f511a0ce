"""Failed jobs by the destination they wait for: which destinations to ask whether they are
back, and the jobs that go at once when one is (`pipeline.recovery`)."""

from sqlalchemy import Exists, select, update

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, Job
from dicomnode.status import DeliveryStatus, JobStatus


def failed_at(destination: str) -> Exists:
    """A job's delivery to `destination` failed, for now (by its index on job_id)."""
    return (
        select(Delivery.id)
        .where(
            Delivery.job_id == Job.id,
            Delivery.destination == destination,
            Delivery.status == DeliveryStatus.FAILED,
        )
        .exists()
    )


def destinations_waited_for(db: Database) -> set[str]:
    """The destinations a failed job will try again later: not yet due, so it waits for them."""
    with db.session() as session:
        now = db_now(session)
        return set(
            session.scalars(
                select(Delivery.destination)
                .join(Job, Job.id == Delivery.job_id)
                .where(
                    Job.status == JobStatus.FAILED,
                    Job.next_attempt_at > now,
                    Delivery.status == DeliveryStatus.FAILED,
                )
                .distinct()
            )
        )


def bring_failed_forward(db: Database, destination: str) -> int:
    """Every failed job that waits for `destination` is due now; how many."""
    with db.session() as session:
        now = db_now(session)
        woken = session.scalars(
            update(Job)
            .where(
                Job.status == JobStatus.FAILED,
                Job.next_attempt_at > now,
                failed_at(destination),
            )
            .values(next_attempt_at=now)
            .returning(Job.id)
        ).all()
    return len(woken)
