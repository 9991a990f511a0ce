"""The outbox on a real spool: each attempt at a job keeps its outputs in a folder of its own,
and an attempt clears only those of the attempts before it (a worker paused past its lease
must not touch what the attempt after it made; the two-worker case is in test_scaleout.py)."""

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dicomnode.errors import SpoolError
from dicomnode.pipeline.replay import replay_outgoing
from dicomnode.spool import Spool
from dicomnode.status import JobPart, Replay
from tests.support.series import series_instance_uid, sop_instance_uid, write_ct_series

CLAIMED = datetime(2026, 12, 2, 21, 0, 0, 123456)
JOB = 7


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def _attempt(seconds_later: float, lease: str = "host:1:derived-0:ab12cd34") -> str:
    return Spool.outbox_attempt(CLAIMED + timedelta(seconds=seconds_later), lease)


def _write(spool: Spool, attempt: str, series: str = "1.2.3", sop: str = "1.2.3.1") -> Path:
    return spool.write_outbox(JOB, attempt, series, sop, b"derived")


def test_attempt_folders_sort_as_they_were_claimed_and_two_leases_never_share_one() -> None:
    earlier, later = _attempt(0), _attempt(0.000001)
    assert earlier.startswith("attempt-20261202T210000123456-")
    assert sorted([later, earlier]) == [earlier, later]
    assert _attempt(0, "host:1:derived-0:00000000") != _attempt(0, "host:2:derived-0:00000000")


def test_an_attempt_clears_the_outputs_before_it_and_never_those_after_it(spool: Spool) -> None:
    earlier, mine, later = _attempt(-400), _attempt(0), _attempt(400)
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
    mine, later = _attempt(0), _attempt(400)
    ours, theirs = _write(spool, mine), _write(spool, later)
    spool.clear_outbox_attempt(JOB, mine)
    assert not ours.parents[1].exists() and theirs.exists()


def test_outputs_are_listed_per_attempt_and_the_old_layout_still_reads(spool: Spool) -> None:
    mine = _attempt(0)
    ours = [_write(spool, mine, "1.2.3", "1.2.3.2"), _write(spool, mine, "1.2.3", "1.2.3.1")]
    report = _write(spool, mine, "1.2.4", "1.2.4.1")
    legacy = spool.outbox_dir / str(JOB) / "1.2.9" / "1.2.9.1.dcm"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"derived")

    assert spool.outbox_series(JOB, mine) == {"1.2.3": sorted(ours), "1.2.4": [report]}
    assert spool.outbox_series(JOB, None) == {"1.2.9": [legacy]}  # no attempt folder in it
    assert spool.outbox_series(JOB, _attempt(400)) == {}


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
    mine, stale = _attempt(0), _attempt(-400)
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
