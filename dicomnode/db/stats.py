"""What the metrics endpoint reads from the database: counts of jobs, deliveries and awaited
storage commitments, the queue.

Read at scrape time rather than counted in memory, so every process that shares the database
(a listener, several workers) reports the same numbers.
"""

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Commitment, Delivery, Job
from dicomnode.status import ACTIVE_STATUSES, JobStatus


@dataclass(frozen=True)
class QueueSnapshot:
    """Jobs by (status, part), deliveries by (destination, status), and the oldest queued job."""

    jobs: dict[tuple[str, str], int]
    deliveries: dict[tuple[str, str], int]
    queued: int
    oldest_queued_at: datetime | None  # naive UTC, like every time in the database
    taken_at: datetime
    # Instances whose Storage Commitment report a job still in progress awaits, by destination.
    commitments_awaited: dict[str, int] = field(default_factory=dict)

    @property
    def oldest_queued_age_seconds(self) -> float:
        """How long the oldest queued job has waited; 0 with an empty queue."""
        if self.oldest_queued_at is None:
            return 0.0
        return max(0.0, (self.taken_at - self.oldest_queued_at).total_seconds())


def queue_snapshot(db: Database) -> QueueSnapshot:
    """One consistent read (one transaction) of the job and delivery tables."""
    with db.reading() as session:
        jobs = {
            (str(status), str(part)): int(count)
            for status, part, count in session.execute(
                select(Job.status, Job.part, func.count()).group_by(Job.status, Job.part)
            )
        }
        deliveries = {
            (str(destination), str(status)): int(count)
            for destination, status, count in session.execute(
                select(Delivery.destination, Delivery.status, func.count()).group_by(
                    Delivery.destination, Delivery.status
                )
            )
        }
        oldest = session.scalar(
            select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED)
        )
        awaited = {  # pending rows of ended jobs wait for nothing: not counted
            str(destination): int(count)
            for destination, count in session.execute(
                select(Commitment.destination, func.count())
                .join(Job, Job.id == Commitment.job_id)
                .where(Commitment.state == "pending", Job.status.in_(ACTIVE_STATUSES))
                .group_by(Commitment.destination)
            )
        }
        taken_at = db_now(session)
    queued = sum(count for (status, _), count in jobs.items() if status == JobStatus.QUEUED)
    return QueueSnapshot(jobs, deliveries, queued, oldest, taken_at, awaited)


def check_reachable(db: Database) -> None:
    """Open a transaction and run a trivial query; raises (SQLAlchemy's error) if the database
    cannot be reached or written to (SQLite: the write lock is taken at BEGIN)."""
    with db.session() as session:
        session.execute(text("SELECT 1"))
