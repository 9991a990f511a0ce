"""Spool retention: delivered series leave the disk `retention.keep_days` after their jobs finished.

Only series whose every job is done or cancelled are purged; failed and dead work keeps its
inputs for as long as it takes an admin to look. A derived series QA held back waits
`retention.held_days` for a release, then its job is cancelled: the originals went long ago, and
a node that kept every held series would fill its disk in months (most real CT is held at x1,
models/MODEL_CARD.md). The node runs this every `retention.check_seconds`; `dicomnode purge` runs
it once by hand.
"""

import logging
import threading
import time
from datetime import datetime, timedelta

from dicomnode.config import Settings
from dicomnode.db import Database
from dicomnode.db.discard import discard_series
from dicomnode.db.history import EventKind, record_admin_action
from dicomnode.db.models import utcnow
from dicomnode.db.retention import PurgedSeries, expire_held, purge_series, purgeable_series
from dicomnode.errors import SpoolError
from dicomnode.spool import Spool

log = logging.getLogger(__name__)

# After each transaction of retention, a pause: a C-STORE waiting for the database's write lock
# takes it then (SQLite's busy handler polls, 1 to 100 ms apart; back-to-back transactions could
# keep it waiting past its timeout).
PAUSE_SECONDS = (0.01, 0.1)  # the shortest and the longest
EXPIRED_PER_TRANSACTION = 200  # held jobs cancelled in one transaction (~70 ms on SQLite)
# A temp file of a write this old was left by a process that stopped between its write and its
# rename (a kill, a power cut): no write takes an hour (a stalled sender is dropped after
# network.network_timeout). Up to an instance of node.max_instance_mb per association each.
STALE_PART_SECONDS = 3600.0
JOBS_NAMED = 20  # job ids an admin's purge names in its history row and log line


def _pause(transaction_seconds: float) -> float:
    """As long as the transaction before it took, within `PAUSE_SECONDS`."""
    return min(max(transaction_seconds, PAUSE_SECONDS[0]), PAUSE_SECONDS[1])


def _cutoff(settings: Settings) -> datetime | None:
    days = settings.retention.keep_days
    return utcnow() - timedelta(days=days) if days > 0 else None


def _files_written_before(settings: Settings) -> float:
    """The POSIX time before which a purged series' file was written, and after which it is a
    new copy that arrived while the purge decided (kept with its new row).

    Half the retention ago, not all of it: a file's time is the file server's clock (NFS), and
    one that ran ahead of ours by more than the few seconds from an instance's arrival to its
    job's end kept every purged file for good, unseen (rows gone), until the disk filled. A
    copy that arrives during the purge is seconds old.
    """
    return time.time() - settings.retention.keep_days * 86400 / 2


def due_for_purge(settings: Settings, db: Database) -> list[str]:
    """The series UIDs a purge would delete now (`dicomnode purge --dry-run`)."""
    cutoff = _cutoff(settings)
    return purgeable_series(db, cutoff) if cutoff else []


def purge_delivered(
    settings: Settings,
    db: Database,
    spool: Spool,
    user: str | None = None,
    stopping: threading.Event | None = None,
) -> list[PurgedSeries]:
    """Delete every series past its retention from the spool and the database.

    One transaction per series, then a pause as long as it took (`_pause`): the receiver's
    stores wait for none longer than one series' deletion (SQLite has one writer), and get the
    lock at least as often as retention. `user`: an admin ran it (`dicomnode purge`); the purge
    goes to the node's log as theirs. `stopping`: the node is stopping; what is left waits for
    its next start."""
    stopping = stopping or threading.Event()
    # Not on a spool that went away: its rows would go and its files, once back, be orphans
    # that `doctor --repair` sends again.
    spool.check_identity_kept()
    _sweep_stale_parts(spool)
    _expire_held(settings, db, stopping)
    cutoff = _cutoff(settings)
    if cutoff is None or stopping.is_set():
        return []

    def remove_outputs(job_ids: list[int]) -> None:
        for job_id in job_ids:
            spool.clear_outbox(job_id)

    purged = []
    for series_uid in purgeable_series(db, cutoff):
        started = time.monotonic()
        result = purge_series(db, series_uid, cutoff, remove_outputs)
        if result is not None:
            _remove_files(spool, result, written_before=_files_written_before(settings))
            purged.append(result)
            log.info(
                "purged series=%s study=%s jobs=%s instances=%d (retention.keep_days=%g)",
                result.series_uid,
                result.study_uid,
                ",".join(map(str, result.job_ids)),
                result.instances,
                settings.retention.keep_days,
            )
        if stopping.wait(_pause(time.monotonic() - started)):  # its files gone with its rows
            break
    if user is not None and purged:
        jobs = [job_id for item in purged for job_id in item.job_ids]
        named = ",".join(map(str, jobs[:JOBS_NAMED]))
        if len(jobs) > JOBS_NAMED:  # after a backlog: a line and a row, not megabytes
            named += f" and {len(jobs) - JOBS_NAMED} more"
        record_admin_action(
            db,
            EventKind.PURGE,
            user,
            f"{len(purged)} series purged (jobs {named}), delivered more than "
            f"{settings.retention.keep_days:g} days ago",
        )
    return purged


def _sweep_stale_parts(spool: Spool) -> None:
    """Delete the temp files writes left behind (`dicomnode doctor` lists them too)."""
    removed, size = 0, 0
    try:
        for part in spool.stale_parts(STALE_PART_SECONDS):
            try:
                part_size = part.stat().st_size
            except FileNotFoundError:  # another process swept it meanwhile
                continue
            if spool.remove_part(part, STALE_PART_SECONDS):
                removed, size = removed + 1, size + part_size
    except OSError as exc:  # a file server's error (ESTALE, EIO): the purge still runs
        log.warning("temp files of unfinished writes not swept: %s", exc)
    if removed:
        log.info(
            "temp files of unfinished writes removed files=%d bytes=%d (older than %g s)",
            removed,
            size,
            STALE_PART_SECONDS,
        )


def _expire_held(settings: Settings, db: Database, stopping: threading.Event) -> None:
    """Cancel the derived jobs held past `retention.held_days`, a batch per transaction (the
    first run after an upgrade may find thousands)."""
    days = settings.retention.held_days
    if days <= 0:
        return
    reason = f"held more than {days:g} days without a release (retention.held_days)"
    held_before = utcnow() - timedelta(days=days)
    while not stopping.is_set():
        started = time.monotonic()
        expired = expire_held(db, held_before, reason, limit=EXPIRED_PER_TRANSACTION)
        for job_id, series_uid in expired:
            log.warning(
                "held derived series expired job=%d series=%s: %s", job_id, series_uid, reason
            )
        if len(expired) < EXPIRED_PER_TRANSACTION:
            return
        stopping.wait(_pause(time.monotonic() - started))


def discard(db: Database, spool: Spool, job_id: int, user: str) -> PurgedSeries:
    """Delete the series of a dead or cancelled job from the database and the spool (its
    instances and every job's outputs): `dicomnode jobs discard`."""
    spool.check_identity_kept()
    decided_at = time.time()

    def remove_outputs(job_ids: list[int]) -> None:
        for one in job_ids:
            spool.clear_outbox(one)

    result = discard_series(db, job_id, remove_outputs, user)
    # Only files written before the decision: a copy received since belongs to a new arrival.
    _remove_files(spool, result, written_before=decided_at)
    log.info(
        "discarded series=%s study=%s jobs=%s instances=%d by=%s",
        result.series_uid,
        result.study_uid,
        ",".join(map(str, result.job_ids)),
        result.instances,
        user,
    )
    return result


def _remove_files(spool: Spool, series: PurgedSeries, written_before: float) -> None:
    """Delete the files of a series whose rows are gone. One that cannot be deleted (outside
    the spool: a data_dir moved by hand; a permission) is left where it is, named in one warning
    for the series, and the purge goes on. Left inside the spool, `dicomnode doctor` reports it
    as a file without a row (and `--repair` would take it for a new arrival)."""
    kept = []
    for path in series.paths:
        try:
            spool.remove(path, written_before=written_before)
        except (SpoolError, OSError) as exc:
            kept.append(str(exc))
    spool.prune_empty_dirs({path.parent for path in series.paths})
    if kept:
        log.warning(
            "files of a forgotten series not deleted series=%s files=%d: %s",
            series.series_uid,
            len(kept),
            kept[0],
        )
