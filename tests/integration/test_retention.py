"""Retention on a real SQLite file and PostgreSQL and a real spool: what a purge deletes, and
what it must not."""

import logging
import os
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

import dicomnode.pipeline.retention as retention_module
import dicomnode.spool as spool_module
from dicomnode.config import RetentionSettings, Settings
from dicomnode.db import Database, DeliveryStatus, ReceivedInstance
from dicomnode.db.admin import cancel_job, resend_job
from dicomnode.db.commitments import commitment_counts, record_report, record_request
from dicomnode.db.instances import create_jobs_for_quiet_series, record_instance
from dicomnode.db.jobs import (
    claim_next_job,
    finish_attempt,
    get_job,
    list_jobs,
    record_delivery,
)
from dicomnode.db.models import Commitment, Job, utcnow
from dicomnode.db.retention import purge_series
from dicomnode.dicom.commitment import CommitmentReport, Reference
from dicomnode.errors import JobStateError
from dicomnode.pipeline.retention import purge_delivered
from dicomnode.spool import Spool
from dicomnode.status import JobPart, JobStatus
from tests.conftest import ON_BOTH_DATABASES

SETTINGS = Settings(retention=RetentionSettings(keep_days=1))
CT = "1.2.840.10008.5.1.4.1.1.2"

ORIGINALS_ONLY = [JobPart.ORIGINALS]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def store(db: Database, spool: Spool, study: str, series: str, sop: str) -> Path:
    path = spool.write_instance(study, series, sop, b"DICM" * 64)
    record_instance(
        db, ReceivedInstance(sop, CT, "1.2.840.10008.1.2.1", study, series, "CT", path, 256, "T")
    )
    return path


def deliver_days_ago(db: Database, days: float) -> int:
    """Turn the quiet series into a job, deliver it, and date its finish `days` back."""
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DONE, 1, None)
    finish_attempt(db, job_id, "w", SETTINGS.retry)
    date_back(db, job_id, days)
    return job_id


def originals_delivered(db: Database) -> tuple[int, int]:
    """Jobs for the quiet series, both parts; the originals delivered. (originals, derived)."""
    both = [JobPart.ORIGINALS, JobPart.DERIVED]
    originals, derived = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=both)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, originals, "w", "pacs", DeliveryStatus.DONE, 1, None)
    finish_attempt(db, originals, "w", SETTINGS.retry)
    return originals, derived


def date_back(db: Database, job_id: int, days: float) -> None:
    """Date a job's last change `days` back."""
    with db.session() as session:
        then = utcnow() - timedelta(days=days)
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=then))


def age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


@ON_BOTH_DATABASES
def test_only_series_delivered_before_the_cutoff_are_purged(db: Database, spool: Spool) -> None:
    old = store(db, spool, "1.2.3", "1.2.3.1", generate_uid())
    age(old, 3)
    deliver_days_ago(db, 2)
    recent = store(db, spool, "1.2.3", "1.2.3.2", generate_uid())
    deliver_days_ago(db, 0.5)

    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.series_uid == "1.2.3.1" and purged.instances == 1
    assert not old.exists() and not old.parent.exists() and recent.exists()
    assert [job.series_uid for job in list_jobs(db)] == ["1.2.3.2"]
    assert purge_delivered(SETTINGS, db, spool) == []


@ON_BOTH_DATABASES
def test_a_file_the_purge_cannot_delete_is_named_and_the_next_series_still_purged(
    db: Database, spool: Spool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row whose file lies outside the spool (a data_dir moved by hand) stopped the whole
    retention run with a SpoolError after its rows were gone; every later series waited, and
    each run forgot one more series only. Its file is now left, named, and the purge goes on."""
    moved = tmp_path / "old-data-dir" / "a.dcm"
    moved.parent.mkdir()
    moved.write_bytes(b"DICM")
    record_instance(
        db,
        ReceivedInstance(
            generate_uid(), CT, "1.2.840.10008.1.2.1", "1.2.5", "1.2.5.1", "CT", moved, 4, "T"
        ),
    )
    deliver_days_ago(db, 3)
    later = store(db, spool, "1.2.5", "1.2.5.2", generate_uid())
    age(later, 3)
    deliver_days_ago(db, 2)

    purged = purge_delivered(SETTINGS, db, spool)
    assert [series.series_uid for series in purged] == ["1.2.5.1", "1.2.5.2"]
    assert moved.exists() and not later.exists()
    assert (
        f"files of a forgotten series not deleted series=1.2.5.1 files=1: refusing to "
        f"delete {moved}: outside the spool" in caplog.text
    )


@ON_BOTH_DATABASES
def test_a_node_that_is_stopping_purges_no_further_series(db: Database, spool: Spool) -> None:
    """Retention runs one series per transaction with a pause between; a node told to stop
    leaves what is left for its next start (a year's backlog took hours in one run, past any
    stop timeout)."""
    for series in ("1.2.6.1", "1.2.6.2"):
        age(store(db, spool, "1.2.6", series, generate_uid()), 3)
        deliver_days_ago(db, 2)
    stopping = threading.Event()
    stopping.set()
    assert purge_delivered(SETTINGS, db, spool, stopping=stopping) == []
    assert len(purge_delivered(SETTINGS, db, spool)) == 2


@ON_BOTH_DATABASES
def test_a_purge_told_to_stop_deletes_the_files_of_the_series_whose_rows_it_deleted(
    db: Database, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop is heard between series, after a series' files went with its rows: files left
    without rows would be indexed by `doctor --repair` as new arrivals and sent again."""
    files = {}
    for series in ("1.2.7.1", "1.2.7.2"):
        files[series] = store(db, spool, "1.2.7", series, generate_uid())
        age(files[series], 3)
        deliver_days_ago(db, 2)
    stopping = threading.Event()
    purge_one = retention_module.purge_series

    def purge_then_stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = purge_one(*args, **kwargs)
        stopping.set()  # SIGTERM, while this series' transaction commits
        return result

    monkeypatch.setattr(retention_module, "purge_series", purge_then_stop)
    [purged] = purge_delivered(SETTINGS, db, spool, stopping=stopping)
    assert not files[purged.series_uid].exists()
    [kept] = set(files) - {purged.series_uid}
    assert files[kept].exists() and [job.series_uid for job in list_jobs(db)] == [kept]


@ON_BOTH_DATABASES
def test_a_copy_that_arrives_during_the_purge_keeps_its_file(db: Database, spool: Spool) -> None:
    sop = generate_uid()
    path = store(db, spool, "1.2.4", "1.2.4.1", sop)
    age(path, 3)
    deliver_days_ago(db, 2)
    # The modality re-sends the instance: the receiver has written the new file and waits for
    # the database while the purge decides. The purge must not delete the new copy.
    path.write_bytes(b"DICM" * 65)

    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.instances == 1
    assert path.read_bytes() == b"DICM" * 65


@ON_BOTH_DATABASES
def test_files_stamped_by_a_clock_ahead_of_ours_are_purged_with_their_rows(
    db: Database, spool: Spool
) -> None:
    """A file server whose clock runs an hour ahead (NFS stamps mtimes by its own) made every
    purged file look newer than the cutoff: kept, rows gone, until the disk filled."""
    path = store(db, spool, "1.2.6", "1.2.6.1", generate_uid())
    minute = 1 / 1440
    deliver_days_ago(db, 1 + minute)  # done just past the retention of a day
    age(path, 1 + 2 * minute - 1 / 24)  # received a minute before, stamped an hour ahead
    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.instances == 1 and not path.exists()


def test_temp_files_of_writes_a_crash_cut_short_are_swept_by_the_retention_run(
    db: Database, spool: Spool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed between a write and its rename leaves its temp file; only `doctor`
    looked for them, so each crash left up to an instance per association for good. A temp
    file's age is its ctime's: the link that keeps a replaced copy while its row commits has
    the old copy's mtime (days) but is new, and must not be taken."""
    monkeypatch.setattr(retention_module, "STALE_PART_SECONDS", 1.0)
    left = spool.tmp_dir / "left-by-a-kill.part"
    left.write_bytes(b"x" * 1000)
    old_copy = store(db, spool, "1.2.13", "1.2.13.1", "1.2.13.1.1")
    age(old_copy, 3)
    time.sleep(1.1)
    writing = spool.tmp_dir / "being-written.part"
    writing.write_bytes(b"y")
    placed = spool.place_instance("1.2.13", "1.2.13.1", "1.2.13.1.1", b"a re-sent copy")
    assert placed.replaced is not None  # linked into tmp/ now, with a 3-day-old mtime
    with caplog.at_level(logging.INFO, "dicomnode.pipeline.retention"):
        purge_delivered(SETTINGS, db, spool)
    assert not left.exists() and writing.exists() and placed.replaced.exists()
    assert "temp files of unfinished writes removed files=1 bytes=1000" in caplog.text
    spool.undo(placed)  # the row could not be committed: the acknowledged copy comes back
    assert old_copy.read_bytes() == b"DICM" * 64


def test_a_spool_that_never_purges_remembers_a_bounded_number_of_folders(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver process writes for months and never purges: it remembered every series'
    folder it had made durable (about 1 KB each, ~420 MB a year at 1,000 series a day)."""
    monkeypatch.setattr(spool_module, "DURABLE_DIRS_KEPT", 4)
    first = spool.write_instance("1.2.12", "1.2.12.1", "1.2.12.1.1", b"a")
    for index in range(2, 21):
        spool.write_instance("1.2.12", f"1.2.12.{index}", f"1.2.12.{index}.1", b"a")
    assert len(spool._durable_dirs) == 4
    shutil.rmtree(first.parent)  # forgotten here, and removed by another process meanwhile
    again = spool.write_instance("1.2.12", "1.2.12.1", "1.2.12.1.2", b"b")
    assert again.read_bytes() == b"b"


def test_a_series_directory_removed_by_another_process_is_made_again(spool: Spool) -> None:
    first = spool.write_instance("1.2.5", "1.2.5.1", "1.2.5.1.1", b"a")
    shutil.rmtree(first.parent.parent)  # `dicomnode purge` in another process
    second = spool.write_instance("1.2.5", "1.2.5.1", "1.2.5.1.2", b"b")
    assert second.read_bytes() == b"b"


@ON_BOTH_DATABASES
def test_a_series_a_destination_has_still_to_commit_is_kept_until_it_reports(
    db: Database, spool: Spool
) -> None:
    sop = generate_uid()
    path = store(db, spool, "1.2.6", "1.2.6.1", sop)
    age(path, 3)
    job_id = deliver_days_ago(db, 2)
    transaction = generate_uid()
    record_request(db, job_id, "pacs", transaction, [Reference(CT, sop)])

    assert purge_delivered(SETTINGS, db, spool) == []
    assert path.exists()

    record_report(db, CommitmentReport(transaction, (Reference(CT, sop),), ()))
    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.series_uid == "1.2.6.1" and not path.exists()
    assert commitment_counts(db, job_id) == {}


@ON_BOTH_DATABASES
def test_what_a_job_asked_to_commit_before_it_was_done_does_not_keep_its_series(
    db: Database, spool: Spool
) -> None:
    """An attempt asked the PACS to commit and never heard back (the job failed); the admin
    turned the destination's storage_commitment off and the retry delivered without asking.
    The done job waits for no report: its series is purged like any other."""
    sop = generate_uid()
    path = store(db, spool, "1.2.9", "1.2.9.1", sop)
    age(path, 3)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    transaction = generate_uid()
    record_request(db, job_id, "pacs", transaction, [Reference(CT, sop)])  # never reported
    record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DONE, 1, None)
    finish_attempt(db, job_id, "w", SETTINGS.retry)
    date_back(db, job_id, 2)
    with db.session() as session:  # the request came before the job was done
        then = utcnow() - timedelta(days=3)
        session.execute(update(Commitment).values(updated_at=then))
    # A late report that leaves the instance pending does not make the request newer.
    record_report(db, CommitmentReport(transaction, (), ()))
    assert commitment_counts(db, job_id) == {"pacs": {"committed": 0, "failed": 0, "pending": 1}}

    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.series_uid == "1.2.9.1" and not path.exists()
    assert commitment_counts(db, job_id) == {}


@ON_BOTH_DATABASES
def test_what_a_cancelled_job_asked_to_commit_does_not_keep_its_series(
    db: Database, spool: Spool
) -> None:
    sop = generate_uid()
    first = store(db, spool, "1.2.7", "1.2.7.1", sop)
    [cancelled] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_request(db, cancelled, "pacs", generate_uid(), [Reference(CT, sop)])  # no report
    cancel_job(db, cancelled)
    date_back(db, cancelled, 3)
    second = store(db, spool, "1.2.7", "1.2.7.1", generate_uid())  # a newer job sends both
    age(first, 3)
    age(second, 3)
    deliver_days_ago(db, 2)

    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.series_uid == "1.2.7.1" and purged.instances == 2
    assert not first.exists() and not second.exists()


@ON_BOTH_DATABASES
def test_every_job_of_a_series_counts_not_only_the_newest(db: Database, spool: Spool) -> None:
    # Both series: originals delivered, the derived job then cancelled by an admin (a held
    # series nobody will release). The newest job alone said "not done": kept for ever.
    paths = {}
    for series in ("1.2.8.1", "1.2.8.2"):
        paths[series] = store(db, spool, "1.2.8", series, generate_uid())
        age(paths[series], 30)
        originals, derived = originals_delivered(db)
        cancel_job(db, derived)
        date_back(db, derived, 3)
        date_back(db, originals, 3 if series == "1.2.8.1" else 0.5)  # 1.2.8.2: a late retry

    [purged] = purge_delivered(SETTINGS, db, spool)
    assert purged.series_uid == "1.2.8.1"
    assert not paths["1.2.8.1"].exists()
    assert paths["1.2.8.2"].exists()  # its originals were delivered half a day ago


@ON_BOTH_DATABASES
def test_a_held_derived_series_is_cancelled_after_held_days_then_purged(
    db: Database, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of 2 per transaction (the first run after an upgrade may find thousands, and
    # cancelling them in one held up the stores for seconds): the third expired job is in the
    # second batch, the held one that is not expired in none.
    monkeypatch.setattr(retention_module, "EXPIRED_PER_TRANSACTION", 2)
    settings = Settings(retention=RetentionSettings(keep_days=1, held_days=30))
    held = {}
    for series, held_for in (("1.2.9.3", 32), ("1.2.9.4", 33), ("1.2.9.1", 31), ("1.2.9.2", 29)):
        age(store(db, spool, "1.2.9", series, generate_uid()), 60)
        originals, derived = originals_delivered(db)
        claim_next_job(db, "w", 60, part=JobPart.DERIVED)
        record_delivery(db, derived, "w", "pacs", DeliveryStatus.DONE, 0, None)
        finish_attempt(db, derived, "w", settings.retry, hold="QA: sharpness ratio 5.1 > 4")
        date_back(db, originals, held_for)
        date_back(db, derived, held_for)
        held[series] = derived

    assert purge_delivered(settings, db, spool) == []  # expired now: purged keep_days later
    jobs = {job.id: job for job in list_jobs(db)}
    expired, waiting = jobs[held["1.2.9.1"]], jobs[held["1.2.9.2"]]
    assert expired.status is JobStatus.CANCELLED
    assert expired.error == "held more than 30 days without a release (retention.held_days)"
    assert waiting.status is JobStatus.HELD
    assert [e.kind for e in get_job(db, expired.id).history][-1] == "expire"
    assert {jobs[held[s]].status for s in ("1.2.9.3", "1.2.9.4")} == {JobStatus.CANCELLED}

    for series in ("1.2.9.1", "1.2.9.3", "1.2.9.4"):
        date_back(db, held[series], 2)
    purged = purge_delivered(settings, db, spool)
    assert sorted(p.series_uid for p in purged) == ["1.2.9.1", "1.2.9.3", "1.2.9.4"]
    assert {job.series_uid for job in list_jobs(db)} == {"1.2.9.2"}


@ON_BOTH_DATABASES
def test_with_originals_off_a_held_series_sent_as_received_is_purged_once_it_expired(
    db: Database, spool: Spool
) -> None:
    """With forward_originals = false the derived job is a series' only job: QA held its
    derived series and it sent the series as received. Held past held_days it is cancelled,
    and with no job of the series done, the series stayed for ever. One whose job sent nothing
    (forward_unenhanced = false: the PACS has none of it) still waits for an admin."""
    settings = Settings(retention=RetentionSettings(keep_days=1, held_days=30))
    paths, jobs = {}, {}
    for series, sent in (("1.2.11.1", 1), ("1.2.11.2", 0)):
        paths[series] = store(db, spool, "1.2.11", series, generate_uid())
        age(paths[series], 60)
        [jobs[series]] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=[JobPart.DERIVED])
        claim_next_job(db, "w", 60, part=JobPart.DERIVED)
        record_delivery(db, jobs[series], "w", "pacs", DeliveryStatus.DONE, sent, None)
        finish_attempt(db, jobs[series], "w", settings.retry, hold="QA: self-check -2.1 dB")
        date_back(db, jobs[series], 31)

    assert purge_delivered(settings, db, spool) == []  # expired now: purged keep_days later
    for job_id in jobs.values():
        date_back(db, job_id, 2)
    [purged] = purge_delivered(settings, db, spool)
    assert purged.series_uid == "1.2.11.1" and not paths["1.2.11.1"].exists()
    assert paths["1.2.11.2"].exists()
    assert [(job.series_uid, job.status) for job in list_jobs(db)] == [
        ("1.2.11.2", JobStatus.CANCELLED)
    ]


@ON_BOTH_DATABASES
def test_a_job_an_admin_cancelled_with_a_destination_still_missing_it_keeps_its_series(
    db: Database, spool: Spool
) -> None:
    """Cancelled to be retried later (`jobs retry --status cancelled`): one destination has
    the series, the other not; its inputs stay."""
    path = store(db, spool, "1.2.14", "1.2.14.1", generate_uid())
    age(path, 10)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs", "backup"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DONE, 1, None)
    record_delivery(db, job_id, "w", "backup", DeliveryStatus.FAILED, 0, "down")
    finish_attempt(db, job_id, "w", SETTINGS.retry)
    cancel_job(db, job_id)
    date_back(db, job_id, 9)
    assert purge_delivered(SETTINGS, db, spool) == [] and path.exists()


@ON_BOTH_DATABASES
def test_an_admin_resend_while_the_purge_deletes_its_series_is_told_the_job_is_gone(
    db: Database, spool: Spool
) -> None:
    """The purge locks the series' jobs with the series: a resend of a job it is deleting waits,
    then is told the job is gone. Before, on PostgreSQL, the resend locked only the job's row,
    said "queued", and the purge deleted the job it had just queued."""
    age(store(db, spool, "1.2.3", "1.2.3.1", generate_uid()), 3)
    job_id = deliver_days_ago(db, 2)
    told: list[str] = []

    def resend() -> None:
        try:
            told.append(resend_job(db, job_id, ["pacs"]).status)
        except JobStateError as refused:
            told.append(str(refused))

    admin = threading.Thread(target=resend)

    def meanwhile(_job_ids: list[int]) -> None:  # runs in the purge's transaction, decided
        admin.start()
        time.sleep(1)  # the admin's transaction reaches the job's row

    purged = purge_series(db, "1.2.3.1", utcnow() - timedelta(days=1), meanwhile)
    admin.join(60)

    assert purged is not None and purged.job_ids == [job_id]
    assert told == [f"job {job_id} does not exist (`dicomnode jobs list` lists them)"]
    assert get_job(db, job_id) is None


@ON_BOTH_DATABASES
def test_a_series_purged_meanwhile_by_another_process_is_passed_over(
    db: Database, spool: Spool
) -> None:
    """`dicomnode purge` beside the node's retention, or two listeners sharing a data dir: the
    second purge of a series waits for the first, then finds nothing to do (before, on
    PostgreSQL, it raised and ended the round, or the CLI, with a traceback)."""
    age(store(db, spool, "1.2.3", "1.2.3.1", generate_uid()), 3)
    job_id = deliver_days_ago(db, 2)
    cutoff = utcnow() - timedelta(days=1)
    second: list[object] = []
    other = threading.Thread(
        target=lambda: second.append(purge_series(db, "1.2.3.1", cutoff, lambda _ids: None))
    )

    def meanwhile(_job_ids: list[int]) -> None:
        other.start()
        time.sleep(1)  # the other purge waits for the study's lock

    first = purge_series(db, "1.2.3.1", cutoff, meanwhile)
    other.join(60)

    assert first is not None and first.job_ids == [job_id]
    assert second == [None]
