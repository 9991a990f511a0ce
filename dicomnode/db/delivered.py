"""What each destination already stored of a delivery that is not done yet.

A series of 2,000 images, one of which a PACS answers "try later", went whole again on every
retry: the PACS stored (or, refusing duplicates, answered 0x0111 to) 1,999 copies each time.
The delivery's outcome now records the instances it stored, and the next attempt sends only the
rest. A destination with Storage Commitment does not go by these rows: what it confirmed is
recorded (`db/commitments.py`), and what it stored without confirming is sent and asked for
again (its rows are still kept: they hold if its storage_commitment is turned off).
"""

from collections.abc import Iterable

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from dicomnode.db.engine import Database
from dicomnode.db.models import DeliveredInstance
from dicomnode.status import DeliveryStatus


def delivered_uids(db: Database, job_id: int, destination: str) -> set[str]:
    """The instances of this job `destination` stored on an earlier attempt."""
    with db.reading() as session:
        return set(
            session.scalars(
                select(DeliveredInstance.sop_instance_uid).where(
                    DeliveredInstance.job_id == job_id,
                    DeliveredInstance.destination == destination,
                )
            )
        )


def note_delivered(
    session: Session,
    job_id: int,
    destination: str,
    status: DeliveryStatus,
    stored: Iterable[str],
) -> None:
    """Within the transaction that records a delivery's outcome: the instances it stored, or,
    once it is done, none (nothing of it will be sent again but by a resend, which sends all).
    Written again after a lost acknowledgement, it adds only what is not there yet."""
    if status == DeliveryStatus.DONE:
        forget_delivered(session, [job_id], destination)
        return
    new = set(stored) - set(
        session.scalars(
            select(DeliveredInstance.sop_instance_uid).where(
                DeliveredInstance.job_id == job_id,
                DeliveredInstance.destination == destination,
            )
        )
    )
    if new:
        session.execute(
            insert(DeliveredInstance),
            [
                {"job_id": job_id, "destination": destination, "sop_instance_uid": uid}
                for uid in sorted(new)
            ],
        )


def forget_delivered(session: Session, job_ids: list[int], destination: str | None = None) -> None:
    """The rows of jobs a purge forgets, or of a delivery that is done (to `destination`; None:
    to every one). A resend has none to forget: only a done job is resent."""
    rows = delete(DeliveredInstance).where(DeliveredInstance.job_id.in_(job_ids))
    if destination is not None:
        rows = rows.where(DeliveredInstance.destination == destination)
    session.execute(rows)
