"""Copies refused as UID collisions, remembered for Storage Commitment.

A copy refused because another sender filed its SOP Instance UID in another series (0xC000,
`node.on_duplicate = "replace_unless_foreign"`) is a different image under a UID the node
keeps. A modality that asks for commitment of everything it sent, and is told the node keeps
that UID, may delete its only copy of the refused image. So the refusal is remembered, per
sender, and the commitment SCP confirms such a UID only to the sender of the copy it keeps.
"""

from collections.abc import Iterable

from sqlalchemy import DateTime, bindparam, delete, select, text
from sqlalchemy.orm import Session

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Instance, RefusedCopy

# The same text on SQLite >= 3.24 and PostgreSQL: two processes refusing the same copy at once
# must not fail on the key.
_REMEMBER = text(
    "INSERT INTO refused_copies (sop_instance_uid, calling_aet, series_uid, refused_at)"
    " VALUES (:sop_instance_uid, :calling_aet, :series_uid, :now)"
    " ON CONFLICT (sop_instance_uid, calling_aet) DO UPDATE"
    " SET series_uid = excluded.series_uid, refused_at = excluded.refused_at"
).bindparams(bindparam("now", type_=DateTime))  # stored as the ORM stores its own times


def remember_refusal(
    db: Database, sop_instance_uid: str, series_uid: str, calling_aet: str
) -> None:
    """`calling_aet`'s copy of `sop_instance_uid`, for series `series_uid`, was refused."""
    with db.session() as session:
        session.execute(
            _REMEMBER,
            {
                "sop_instance_uid": sop_instance_uid,
                "calling_aet": calling_aet,
                "series_uid": series_uid,
                "now": db_now(session),
            },
        )


def refused_senders(session: Session, sop_instance_uids: Iterable[str]) -> dict[str, set[str]]:
    """The calling AE titles whose copy of each of these UIDs was refused (only UIDs with one)."""
    rows = session.execute(
        select(RefusedCopy.sop_instance_uid, RefusedCopy.calling_aet).where(
            RefusedCopy.sop_instance_uid.in_(list(sop_instance_uids))
        )
    ).all()
    senders: dict[str, set[str]] = {}
    for uid, calling_aet in rows:
        senders.setdefault(uid, set()).add(calling_aet)
    return senders


def forget_refusals(session: Session, series_uid: str) -> None:
    """Within a purge's transaction, before the series' instance rows go: the refusals of
    copies of its instances (the UIDs are free again)."""
    uids = select(Instance.sop_instance_uid).where(Instance.series_uid == series_uid)
    session.execute(delete(RefusedCopy).where(RefusedCopy.sop_instance_uid.in_(uids)))
