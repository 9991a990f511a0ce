"""What each destination already stored of a delivery that is not done yet.

A series of 2,000 images, one of which a PACS answers "try later", went whole again on every
automatic retry: the PACS stored (or, refusing duplicates, answered 0x0111 to) 1,999 copies each
time. The delivery's outcome now records the instances it stored, and the next attempt sends only
the rest, as long as the destination is the same peer (AE title, host, port). To a destination
with Storage Commitment the next attempt sends what it neither stored nor confirmed keeping
(`db/commitments.py`), and what its latest report said it failed to keep; what it stored and has
not reported on is asked for again. An admin's retry, resend or release sends whole, and so does
a derived job whose series is enhanced anew.
"""

from collections.abc import Iterable

from sqlalchemy import Select, delete, insert, select
from sqlalchemy.orm import Session

from dicomnode.db.engine import Database
from dicomnode.db.models import DeliveredInstance
from dicomnode.status import DeliveryStatus


def _stored_by(job_id: int, destination: str) -> Select[str]:
    """The SOP Instance UIDs recorded for this job's delivery to `destination`."""
    return select(DeliveredInstance.sop_instance_uid).where(
        DeliveredInstance.job_id == job_id, DeliveredInstance.destination == destination
    )


def delivered_uids(db: Database, job_id: int, destination: str, peer: str) -> set[str]:
    """The instances of this job `destination` stored on an earlier attempt, when it was the
    same `peer` as now."""
    with db.reading() as session:
        return set(
            session.scalars(_stored_by(job_id, destination).where(DeliveredInstance.peer == peer))
        )


def note_delivered(
    session: Session,
    job_id: int,
    destination: str,
    peer: str,
    status: DeliveryStatus,
    stored: Iterable[str],
) -> None:
    """Within the transaction that records a delivery's outcome: the instances `peer` stored,
    or, once the delivery is done, none (nothing of it will be sent again but whole). What
    another peer of that name stored goes. Written again after a lost acknowledgement, it adds
    only what is not there yet."""
    if status == DeliveryStatus.DONE:
        forget_delivered(session, [job_id], destination)
        return
    session.execute(
        delete(DeliveredInstance).where(
            DeliveredInstance.job_id == job_id,
            DeliveredInstance.destination == destination,
            DeliveredInstance.peer != peer,
        )
    )
    new = set(stored) - set(session.scalars(_stored_by(job_id, destination)))
    if new:
        rows = [
            {"job_id": job_id, "destination": destination, "sop_instance_uid": uid, "peer": peer}
            for uid in sorted(new)
        ]
        session.execute(insert(DeliveredInstance), rows)


def forget_stored(db: Database, job_id: int) -> None:
    """Every destination's rows of a job whose outputs are made anew (a derived series enhanced
    again: the same SOP Instance UIDs, maybe other pixels)."""
    with db.session() as session:
        forget_delivered(session, [job_id])


def forget_delivered(session: Session, job_ids: list[int], destination: str | None = None) -> None:
    """The rows of a delivery that is done, or that an admin has sent again whole (a retry, a
    resend, a release), to `destination` (None: to every one). A job's own deletion takes its
    rows (CASCADE)."""
    rows = delete(DeliveredInstance).where(DeliveredInstance.job_id.in_(job_ids))
    if destination is not None:
        rows = rows.where(DeliveredInstance.destination == destination)
    session.execute(rows)
