"""The outbox on a real spool and job table: each attempt at a job keeps its outputs in a
folder of its own, numbered by the job's claims, and an attempt clears only those of the
attempts before it (a worker paused past its lease, or holding a job an admin cancelled and
retried, must not touch what the attempt after it made; two real workers: test_scaleout.py)."""

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from dicomnode.db import Database, ReceivedInstance, open_database
from dicomnode.db.admin import cancel_job, retry_job
from dicomnode.db.instances import create_jobs_for_quiet_series, record_instance
from dicomnode.db.jobs import claim_next_job
from dicomnode.errors import SpoolError
from dicomnode.pipeline.replay import replay_outgoing
from dicomnode.spool import Spool
from dicomnode.status import JobPart, Replay
from tests.conftest import ON_BOTH_DATABASES
from tests.support.series import series_instance_uid, sop_instance_uid, write_ct_series

JOB = 7
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def _attempt(claim: int, lease: str = "host:1:derived-0:ab12cd34") -> str:
    return Spool.outbox_attempt(claim, lease)


def _write(spool: Spool, attempt: str, series: str = "1.2.3", sop: str = "1.2.3.1") -> Path:
    return spool.write_outbox(JOB, attempt, series, sop, b"derived")


def _one_job(db: Database, spool: Spool) -> list[int]:
    """A received CT instance, made into a derived job; its id."""
    path = spool.write_instance("1.2", "1.2.3", "1.2.3.1", b"DICM" * 64)
    instance = ReceivedInstance(
        "1.2.3.1", CT, "1.2.840.10008.1.2.1", "1.2", "1.2.3", "CT", path, 256, "T"
    )
    record_instance(db, instance)
    return create_jobs_for_quiet_series(db, 0, ["pacs"], parts=[JobPart.DERIVED])


@ON_BOTH_DATABASES
def test_every_claim_of_a_job_is_counted_and_a_retry_does_not_reset_the_count(
    db: Database, spool: Spool
) -> None:
    [job_id] = _one_job(db, spool)
    first = claim_next_job(db, "host:1:derived-0:aaaaaaaa", 60, JobPart.DERIVED)
    cancel_job(db, job_id)  # while its worker is still at it
    retry_job(db, job_id, ["pacs"])
    second = claim_next_job(db, "host:2:derived-0:bbbbbbbb", 60, JobPart.DERIVED)
    assert first is not None and second is not None
    assert (first.claims, second.claims) == (1, 2)
    assert second.attempts == 1  # the retry gave fresh attempts; the claims go on counting
    earlier = spool.outbox_attempt(first.claims, "host:1:derived-0:aaaaaaaa")
    later = spool.outbox_attempt(second.claims, "host:2:derived-0:bbbbbbbb")
    mine = spool.write_outbox(job_id, later, "1.2.3", "1.2.3.1", b"derived")
    spool.clear_outbox_before(job_id, earlier)  # the first attempt goes on, late
    assert mine.exists()


@ON_BOTH_DATABASES
def test_a_database_from_before_claims_were_counted_gets_the_column_and_counts_on(
    db: Database, spool: Spool, database_url: str, tmp_path: Path
) -> None:
    [job_id] = _one_job(db, spool)
    with db.engine.begin() as connection:
        connection.execute(text("ALTER TABLE jobs DROP COLUMN claims"))
    db.dispose()

    upgraded = open_database(database_url or f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    try:
        claimed = claim_next_job(upgraded, "host:1:derived-0:aaaaaaaa", 60, JobPart.DERIVED)
        assert claimed is not None and (claimed.id, claimed.claims) == (job_id, 1)
    finally:
        upgraded.dispose()


def test_attempt_folders_are_numbered_by_claim_and_two_leases_never_share_one() -> None:
    assert _attempt(3).startswith("attempt-000003-")
    assert _attempt(0, "host:1:derived-0:00000000") != _attempt(0, "host:2:derived-0:00000000")


def test_an_attempt_clears_the_outputs_before_it_and_never_those_after_it(spool: Spool) -> None:
    earlier, mine, later = _attempt(9), _attempt(10), _attempt(11)
    legacy = spool.outbox_dir / str(JOB) / "1.2.9" / "1.2.9.1.dcm"  # before attempt folders
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"derived")
    kept = [_write(spool, mine), _write(spool, later)]
    gone = _write(spool, earlier)
    other_job = spool.write_outbox(JOB + 1, earlier, "1.2.3", "1.2.3.1", b"derived")

    spool.clear_outbox_before(JOB, mine)

    assert [path.exists() for path in kept] == [True, True]
    assert not gone.exists() and not gone.parents[1].exists()
    assert not legacy.parent.exists()
    assert other_job.exists()  # another job's outputs are not this attempt's to clear


def test_an_attempt_that_lost_its_job_clears_only_its_own_folder(spool: Spool) -> None:
    mine, later = _attempt(1), _attempt(2)
    ours, theirs = _write(spool, mine), _write(spool, later)
    spool.clear_outbox_attempt(JOB, mine)
    assert not ours.parents[1].exists() and theirs.exists()


def test_outputs_are_listed_per_attempt_and_the_old_layout_still_reads(spool: Spool) -> None:
    mine = _attempt(1)
    ours = [_write(spool, mine, "1.2.3", "1.2.3.2"), _write(spool, mine, "1.2.3", "1.2.3.1")]
    report = _write(spool, mine, "1.2.4", "1.2.4.1")
    legacy = spool.outbox_dir / str(JOB) / "1.2.9" / "1.2.9.1.dcm"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"derived")

    assert spool.outbox_series(JOB, mine) == {"1.2.3": sorted(ours), "1.2.4": [report]}
    assert spool.outbox_series(JOB, None) == {"1.2.9": [legacy]}  # no attempt folder in it
    assert spool.outbox_series(JOB, _attempt(2)) == {}
    with pytest.raises(SpoolError, match="is not an outbox attempt folder"):
        spool.outbox_series(JOB, "../../instances")  # a record is read as a name, not a path


@pytest.mark.parametrize("name", ["..", "../../instances", "1.2.3", "attempt-1-ab12cd34", ""])
def test_outputs_go_only_to_an_attempt_folder(spool: Spool, name: str) -> None:
    with pytest.raises(SpoolError, match="is not an outbox attempt folder"):
        _write(spool, name)
    assert not any(spool.outbox_dir.rglob("*.dcm"))


def test_a_resend_reads_the_recorded_attempt_and_a_job_from_before_reads_its_series_folders(
    spool: Spool, tmp_path: Path
) -> None:
    [made] = write_ct_series(tmp_path / "made", 1)
    series, sop = series_instance_uid(made), sop_instance_uid(made)
    mine, stale = _attempt(2), _attempt(1)
    for attempt in (mine, stale):
        spool.write_outbox(JOB, attempt, series, sop, made.read_bytes())

    outputs = {"outbox": mine, "series": [series], "held": [], "unenhanced": []}
    [sent] = replay_outgoing(JOB, JobPart.DERIVED, Replay.SENT, outputs, [], spool)
    assert [item.path for item in sent] == [spool.outbox_path(JOB, mine, series, sop)]
    assert sent[0].sop_instance_uid == sop

    spool.clear_outbox(JOB)
    legacy = spool.outbox_dir / str(JOB) / series / f"{sop}.dcm"
    legacy.parent.mkdir(parents=True)
    shutil.copyfile(made, legacy)
    old_record = {"series": [series], "held": [], "unenhanced": []}
    [sent] = replay_outgoing(JOB, JobPart.DERIVED, Replay.SENT, old_record, [], spool)
    assert [item.path for item in sent] == [legacy]

    with pytest.raises(SpoolError, match=f"series={series} is gone from .*/outbox/{JOB}/{mine}"):
        replay_outgoing(JOB, JobPart.DERIVED, Replay.SENT, outputs, [], spool)
