"""Storage Commitment bookkeeping: what each delivery asked a peer to keep and what it said.

One row per (job, destination, instance). A request moves the instances it names to `pending`
under its Transaction UID; the peer's report, whenever and however it comes, moves them to
`committed` or `failed`. Committed rows stay committed: a later attempt asks only for the rest.
A report on the request before the latest (a peer slower than the timeout, whose instances were
asked for again) still commits them; its failures no longer count (the latest request's report
says).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, Select, and_, delete, func, not_, select, update
from sqlalchemy.orm import Session

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.models import Commitment, Instance, Job
from dicomnode.db.refused_copies import refused_senders
from dicomnode.status import JobStatus

if TYPE_CHECKING:  # pydicom and pynetdicom (a second of imports) are not needed to read the table
    from dicomnode.dicom.commitment import CommitmentReport, Reference


class CommitmentState(StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"
    FAILED = "failed"


@dataclass(frozen=True)
class TransactionState:
    """A request's instances by state; `failed` pairs each UID with the peer's reason."""

    committed: int
    pending: int
    failed: tuple[tuple[str, int | None], ...]


def committed_uids(db: Database, job_id: int, destination: str) -> set[str]:
    """Instances of this job the destination already confirmed it keeps."""
    return _uids_in(db, job_id, destination, CommitmentState.COMMITTED)


def failed_uids(db: Database, job_id: int, destination: str) -> set[str]:
    """Instances of this job the destination's latest report on them says it does not keep."""
    return _uids_in(db, job_id, destination, CommitmentState.FAILED)


def _uids_in(db: Database, job_id: int, destination: str, state: CommitmentState) -> set[str]:
    with db.reading() as session:
        return set(
            session.scalars(
                select(Commitment.sop_instance_uid).where(
                    Commitment.job_id == job_id,
                    Commitment.destination == destination,
                    Commitment.state == state,
                )
            )
        )


def record_request(
    db: Database,
    job_id: int,
    destination: str,
    transaction_uid: str,
    references: "Iterable[Reference]",
) -> None:
    """Mark these instances pending under `transaction_uid` (a new row, or a re-asked one)."""
    wanted = {ref.sop_instance_uid: ref for ref in references}
    with db.session() as session:
        now = db_now(session)
        rows = session.scalars(
            select(Commitment).where(
                Commitment.job_id == job_id,
                Commitment.destination == destination,
                Commitment.sop_instance_uid.in_(list(wanted)),
            )
        ).all()
        for row in rows:
            ref = wanted.pop(row.sop_instance_uid)
            if row.state == CommitmentState.COMMITTED:  # a late report confirmed it meanwhile
                continue
            if row.transaction_uid != transaction_uid:
                row.previous_transaction_uid = row.transaction_uid
            row.sop_class_uid, row.transaction_uid = ref.sop_class_uid, transaction_uid
            row.state, row.failure_reason, row.updated_at = CommitmentState.PENDING, None, now
        session.add_all(
            Commitment(
                job_id=job_id,
                destination=destination,
                sop_instance_uid=ref.sop_instance_uid,
                sop_class_uid=ref.sop_class_uid,
                transaction_uid=transaction_uid,
                state=CommitmentState.PENDING,
                updated_at=now,
            )
            for ref in wanted.values()
        )


def record_report(db: Database, report: "CommitmentReport") -> int:
    """Apply a peer's report to the rows of its transaction; how many rows it matched
    (0: no request of ours has this Transaction UID)."""
    matched = 0
    with db.session() as session:
        now = db_now(session)
        for ref in report.committed:
            matched += _set_state(session, report.transaction_uid, ref, CommitmentState.COMMITTED)
        for failure in report.failed:
            matched += _set_state(
                session,
                report.transaction_uid,
                failure.reference,
                CommitmentState.FAILED,
                failure.reason,
            )
        session.execute(  # the rows it answered: one it left pending was still asked for then
            update(Commitment)
            .where(
                Commitment.transaction_uid == report.transaction_uid,
                Commitment.state != CommitmentState.PENDING,
            )
            .values(updated_at=now)
        )
    return matched


def _set_state(
    session: Session,
    transaction_uid: str,
    ref: "Reference",
    state: CommitmentState,
    reason: int | None = None,
) -> int:
    """One instance of a report; how many rows of ours it names (0: none asked for it under
    this transaction or the one before), whether or not it changed them."""
    latest = Commitment.transaction_uid == transaction_uid
    asked = latest | (Commitment.previous_transaction_uid == transaction_uid)
    instance = Commitment.sop_instance_uid == ref.sop_instance_uid
    # A commit counts from the request before too (the peer keeps it); a failure only from the
    # latest, whose own report decides; what was committed stays committed.
    applies = asked if state == CommitmentState.COMMITTED else latest
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Commitment)
        .where(applies, instance, Commitment.state != CommitmentState.COMMITTED)
        .values(state=state, failure_reason=reason)
    )
    if result.rowcount:
        return result.rowcount
    known = select(func.count()).select_from(Commitment).where(asked, instance)
    return int(session.scalar(known) or 0)


def transaction_state(db: Database, transaction_uid: str) -> TransactionState:
    with db.session() as session:
        rows = session.execute(
            select(Commitment.sop_instance_uid, Commitment.state, Commitment.failure_reason).where(
                Commitment.transaction_uid == transaction_uid
            )
        ).all()
    return TransactionState(
        committed=sum(state == CommitmentState.COMMITTED for _, state, _ in rows),
        pending=sum(state == CommitmentState.PENDING for _, state, _ in rows),
        failed=tuple(
            (uid, reason) for uid, state, reason in rows if state == CommitmentState.FAILED
        ),
    )


def commitment_counts(db: Database, job_id: int) -> dict[str, dict[str, int]]:
    """Per destination of the job: how many instances are committed, failed and pending."""
    with db.session() as session:
        rows = session.execute(
            select(Commitment.destination, Commitment.state, func.count())
            .where(Commitment.job_id == job_id)
            .group_by(Commitment.destination, Commitment.state)
        ).all()
    counts: dict[str, dict[str, int]] = {}
    for destination, state, count in rows:
        counts.setdefault(destination, {s.value: 0 for s in CommitmentState})[state] = count
    return counts


def pending_commitment_instances() -> Select[str]:
    """SOP Instance UIDs a destination has still to confirm (retention keeps their series).

    Not those asked for by a job since cancelled (superseded by a newer job of its series, or
    by an admin), nor those a job asked for before it was done: a job is done without their
    report only when it no longer asks for one (the destination's `storage_commitment` was
    turned off, or the destination removed, and the job retried). Nothing waits for those
    reports any more, and their rows would keep the series for ever."""
    stale = and_(Job.status == JobStatus.DONE, Commitment.updated_at <= Job.updated_at)
    return (
        select(Commitment.sop_instance_uid)
        .join(Job, Job.id == Commitment.job_id)
        .where(
            Commitment.state == CommitmentState.PENDING,
            Job.status != JobStatus.CANCELLED,
            not_(stale),
        )
    )


@dataclass(frozen=True)
class KeptCopy:
    """The copy of a SOP Instance UID the node keeps, as Storage Commitment needs it."""

    sop_class_uid: str
    path: Path
    calling_aet: str  # who sent it
    refused_from: frozenset[str]  # senders whose own copy of the UID was refused (`refused_copies`)


def kept_copies(db: Database, sop_instance_uids: Iterable[str]) -> dict[str, KeptCopy]:
    """The copy of each of these instances the node has a row for."""
    uids = list(sop_instance_uids)
    with db.reading() as session:
        rows = session.execute(
            select(
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Instance.path,
                Instance.calling_aet,
            ).where(Instance.sop_instance_uid.in_(uids))
        ).all()
        refused = refused_senders(session, uids) if rows else {}
    return {
        uid: KeptCopy(sop_class, Path(path), calling_aet, frozenset(refused.get(uid, ())))
        for uid, sop_class, path, calling_aet in rows
    }


def forget_commitments(
    session: Session, job_ids: list[int], destination: str | None = None
) -> None:
    """Within a purge's transaction: the rows of jobs being forgotten; within a resend's, the
    rows of the job to `destination` (None: all), so it is sent and asked for all again."""
    rows = delete(Commitment).where(Commitment.job_id.in_(job_ids))
    if destination is not None:
        rows = rows.where(Commitment.destination == destination)
    session.execute(rows)
