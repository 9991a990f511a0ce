"""Recording received instances and the completion rule that turns quiet series into jobs."""

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Table, and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from dicomnode.db.clock import db_now
from dicomnode.db.engine import Database
from dicomnode.db.instance_rows import kept_out, write_rows
from dicomnode.db.models import (
    Delivery,
    Instance,
    Job,
    JobInstance,
    Series,
)
from dicomnode.db.records import KeptOut, ReceivedInstance
from dicomnode.status import JobPart, JobStatus

log = logging.getLogger(__name__)


def stored_path(db: Database, sop_instance_uid: str) -> Path | None:
    """The spool path of an instance already received, or None."""
    with db.session() as session:
        path = session.scalar(
            select(Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
        )
    return Path(path) if path is not None else None


def foreign_copy(
    db: Database, sop_instance_uid: str, series_uid: str, calling_aet: str
) -> KeptOut | None:
    """The copy of this SOP Instance UID that another sender than `calling_aet` filed in
    another series than `series_uid`, if there is one (`instance_rows.kept_out`)."""
    with db.reading() as session:
        stored = session.execute(
            select(Instance.series_uid, Instance.calling_aet).where(
                Instance.sop_instance_uid == sop_instance_uid
            )
        ).first()
    return None if stored is None else kept_out(stored, series_uid, calling_aet)


def record_instance(
    db: Database, item: ReceivedInstance, before_commit: Callable[[], object] | None = None
) -> Path | KeptOut | None:
    """Insert or update the instance row in one transaction; return the old path if it moved,
    or KeptOut when the row was not written.

    `before_commit` runs inside the transaction, just before COMMIT; if it raises, nothing is
    recorded. The receiver calls this once the file's bytes are durable under their final name,
    and passes "start the fsync of that name" here, so the name's fsync runs with the COMMIT
    (see `forget_instances_without_files`).
    A re-sent SOP Instance UID replaces the earlier copy and marks its series pending again,
    so the next job forwards the latest version; unless `item.replaces_foreign` is false and
    another sender filed it in another series: then nothing is written (KeptOut).
    """
    return record_instances(db, [item], before_commit)[0]


def record_instances(
    db: Database,
    items: Sequence[ReceivedInstance],
    before_commit: Callable[[], object] | None = None,
) -> list[Path | KeptOut | None]:
    """`record_instance` for several rows in one transaction (one commit, one fsync); what it
    returns for each, in order."""
    with db.engine.begin() as connection:
        moved = write_rows(connection, items, db_now(connection))
        if before_commit is not None:
            before_commit()
    return moved


# How far before the newest row a row may still lack its file's name after a power loss: the
# receiver commits a row while its name's fsync runs (milliseconds); this is generous.
UNSYNCED_NAME_WINDOW = timedelta(minutes=10)


def newest_path(db: Database) -> Path | None:
    """The spool file of the instance received last (None: no instance yet)."""
    with db.reading() as session:
        path = session.scalar(select(Instance.path).order_by(Instance.received_at.desc()).limit(1))
    return None if path is None else Path(path)


def forget_instances_without_files(db: Database) -> list[tuple[str, str]]:
    """Delete the rows of the newest instances whose spool file is missing; return their
    (SOP Instance UID, Series Instance UID).

    The receiver commits an instance's row while the fsync that makes its file's name durable
    runs, and answers Success only after both: a power loss in between can leave a row whose
    file never got its name, for an instance the sender was never told was stored (it sends
    it again). Only rows that no job took yet are removed.
    """
    with db.session() as session:
        newest = session.scalar(select(func.max(Instance.received_at)))
        if newest is None:
            return []
        recent = session.execute(
            select(Instance.sop_instance_uid, Instance.series_uid, Instance.path).where(
                Instance.received_at >= newest - UNSYNCED_NAME_WINDOW,
                ~exists().where(JobInstance.sop_instance_uid == Instance.sop_instance_uid),
            )
        ).all()
        missing = [(sop, series) for sop, series, path in recent if not Path(path).is_file()]
        if missing:
            session.execute(
                delete(Instance).where(Instance.sop_instance_uid.in_([m[0] for m in missing]))
            )
    return missing


def mark_series_released(db: Database, series_uids: Iterable[str]) -> None:
    """Record that a sender released the association that carried these series."""
    with db.session() as session:
        session.execute(
            update(Series)
            .where(Series.series_uid.in_(list(series_uids)), Series.pending.is_(True))
            .values(released_at=db_now(session))
        )


def create_jobs_for_quiet_series(
    db: Database,
    quiet_seconds: float,
    destinations: list[str],
    parts: Sequence[JobPart],
    release_quiet_seconds: float = 0.0,
    *,
    takes: Mapping[str, Collection[str]] | None = None,
) -> list[int]:
    """Turn every complete pending series into queued jobs, one per part (originals, derived),
    each with a delivery row per destination that takes that part (`takes`: the parts each
    destination takes, by name, `Destination.send`; one not named, or no `takes`: every part).

    A series is complete when no instance arrived for `quiet_seconds`, or, when
    `release_quiet_seconds` > 0, when its sender released the association after its last
    instance and `release_quiet_seconds` passed without another one (the sender said it is
    done: the originals need not wait out the quiet time). The jobs take all instances of the
    series; older jobs of the same part that have not started yet are cancelled as superseded,
    so a late instance never causes two runs of the same work.

    Safe when several processes tick at once: on PostgreSQL each locks the series it takes
    (`FOR UPDATE SKIP LOCKED`) and skips those another is taking or a receiver is writing to, and
    a series another process has just taken is no longer pending when the lock is granted; on
    SQLite the transactions run one at a time. A series becomes jobs exactly once per quiet spell.
    """
    created: list[int] = []
    made: list[tuple[int, str, str, str, int]] = []  # what the log says of each job
    with db.session() as session:
        now = db_now(session)
        complete = Series.last_received_at <= now - timedelta(seconds=quiet_seconds)
        if release_quiet_seconds > 0:
            released = and_(
                Series.released_at.is_not(None),
                Series.released_at >= Series.last_received_at,
                Series.last_received_at <= now - timedelta(seconds=release_quiet_seconds),
            )
            complete = or_(complete, released)
        quiet = session.scalars(
            select(Series)
            .where(Series.pending.is_(True), complete)
            .with_for_update(skip_locked=True)
        ).all()
        for series in quiet:
            series.pending = False
            sop_uids = session.scalars(
                select(Instance.sop_instance_uid).where(Instance.series_uid == series.series_uid)
            ).all()
            for part in parts:
                names = [n for n in destinations if destination_takes(takes, n, part)]
                job_id = _create_job(session, series, part, sop_uids, names, now)
                created.append(job_id)
                made.append((job_id, part, series.study_uid, series.series_uid, len(sop_uids)))
    for job in made:  # once committed: a commit that fails made no job
        log.info("job created job=%d part=%s study=%s series=%s instances=%d", *job)
    return created


def destination_takes(takes: Mapping[str, Collection[str]] | None, name: str, part: str) -> bool:
    """Whether destination `name` takes `part` by `takes` (the parts each destination takes,
    by name: `Settings.sends`); one not named, or no `takes` at all: every part."""
    return takes is None or name not in takes or part in takes[name]


def seconds_to_next_completion(
    db: Database, quiet_seconds: float, release_quiet_seconds: float = 0.0
) -> float | None:
    """In how many seconds the first pending series becomes complete by the rule of
    `create_jobs_for_quiet_series` if nothing more arrives (by the database's clock: <= 0 when
    it is due already); None when none is pending. The completion tick comes back then rather
    than at its next round."""
    first = func.min(Series.last_received_at)
    pending = Series.pending.is_(True)
    with db.session() as session:
        oldest = session.scalar(select(first).where(pending))
        if oldest is None:
            return None
        due = oldest + timedelta(seconds=quiet_seconds)
        if release_quiet_seconds > 0:
            released = session.scalar(
                select(first).where(
                    pending,
                    Series.released_at.is_not(None),
                    Series.released_at >= Series.last_received_at,
                )
            )
            if released is not None:
                due = min(due, released + timedelta(seconds=release_quiet_seconds))
        return (due - db_now(session)).total_seconds()


def _create_job(
    session: Session,
    series: Series,
    part: JobPart,
    sop_uids: Sequence[str],
    destinations: list[str],
    now: datetime,
) -> int:
    job = Job(
        study_uid=series.study_uid,
        series_uid=series.series_uid,
        part=part,
        status=JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
    )
    session.add(job)
    session.flush()
    session.add_all(JobInstance(job_id=job.id, sop_instance_uid=uid) for uid in sop_uids)
    session.add_all(Delivery(job_id=job.id, destination=name) for name in destinations)
    session.execute(
        update(Job)
        .where(
            Job.series_uid == series.series_uid,
            Job.part == part,
            Job.id != job.id,
            Job.status.in_([JobStatus.QUEUED, JobStatus.FAILED]),
        )
        .values(status=JobStatus.CANCELLED, error=f"superseded by job {job.id}", updated_at=now)
    )
    return job.id


def relocate_instances(db: Database, moved: Sequence[tuple[str, str, str]]) -> None:
    """Point instances' rows at the files where they are now, given (SOP UID, old path, new
    path) each, in one transaction (`dicomnode doctor --repair`); a row that names another file
    by now (received again meanwhile) is left as it is."""
    table = Instance.__table__  # Core: one statement for many rows, no ORM objects
    assert isinstance(table, Table)
    with db.session() as session:
        session.connection().execute(
            update(table)
            .where(table.c.sop_instance_uid == bindparam("sop"), table.c.path == bindparam("old"))
            .values(path=bindparam("new")),
            [{"sop": sop, "old": old, "new": new} for sop, old, new in moved],
        )


def instance_paths(db: Database) -> dict[str, str]:
    """Every recorded spool file's path, as text, and its SOP Instance UID (for `dicomnode
    doctor`); read without the write lock, so a large table holds up no store."""
    with db.reading() as session:
        rows = session.execute(select(Instance.path, Instance.sop_instance_uid))
        return {path: sop for path, sop in rows}
