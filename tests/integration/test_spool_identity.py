"""A spool and a database that are not one pair (`dicomnode/spool_identity.py`): a data disk
that did not mount, a database lost, another node's folder. `serve` refuses them (exit 2, one
line saying what to check) and changes nothing; `doctor --repair` makes a pair an admin has
decided on; a spool that goes away under a running node refuses stores and keeps jobs alive."""

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.config import Settings
from dicomnode.db import open_database
from dicomnode.db.identity import raise_generation, recorded_generation
from dicomnode.errors import SpoolError
from dicomnode.pipeline.retention import purge_delivered
from dicomnode.spool import Spool
from dicomnode.spool_identity import advance_generation, claim_both, identity_problem
from tests.integration.test_startup_refusals import refusal
from tests.support.dcmtk import storescu
from tests.support.node import NodeProcess
from tests.support.ports import free_port
from tests.support.series import write_ct_series


def _unreachable() -> dict[str, object]:
    return {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}


def _instance_rows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM instances").fetchone()[0])


def test_a_data_disk_that_did_not_mount_stops_the_start_and_costs_nothing(
    node_factory, ct_series: list[Path], tmp_path: Path
) -> None:
    """Before, the node started on the empty mount point, forgot the rows of the series still
    arriving ("its sender was not told Success": it was) and made the waiting jobs dead."""
    database = tmp_path / "outside.sqlite"  # the database is not on the data disk
    node = node_factory(
        [_unreachable()],
        node={"database_url": f"sqlite:///{database}"},
        completion={"series_quiet_seconds": 600, "release_quiet_seconds": 600},
    ).start()
    assert storescu(node.port, ct_series[:3]).returncode == 0
    node.stop()
    mounted = node.data_dir.with_name("disk")
    node.data_dir.rename(mounted)  # unmounted: an empty folder where the disk belongs
    node.data_dir.mkdir()

    line = refusal(node)
    assert "has no identity file (spool-identity)" in line and "is the data disk mounted" in line
    assert _instance_rows(database) == 3  # nothing forgotten
    assert not list(node.data_dir.rglob("*.dcm"))

    shutil.rmtree(node.data_dir)  # the empty folders the refused start made there
    mounted.rename(node.data_dir)  # the disk is back
    node.start()
    assert _instance_rows(database) == 3
    assert "instance forgotten" not in node.log()


def test_a_lost_database_stops_the_start_until_doctor_indexes_the_spool(
    node_factory, ct_series: list[Path]
) -> None:
    node = node_factory([_unreachable()]).start()
    assert storescu(node.port, ct_series[:3]).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "failed")
    node.stop()
    for file in node.data_dir.glob("dicomnode.sqlite*"):
        file.unlink()  # a disk error, an admin's mistake: the spool is all that is left

    line = refusal(node)
    assert "the database holds no instance and no job, but the spool" in line
    assert "dicomnode doctor --repair" in line
    assert len(list(node.data_dir.rglob("*.dcm"))) == 3

    young = node.cli("doctor", check=False)  # --min-age 60: the files are seconds old
    assert "not judged: 3 file(s) without a row younger than --min-age 60 s" in young.stdout
    checked = node.cli("doctor", "--min-age", "0", check=False)
    assert checked.returncode == 1 and "spool and database: the database holds no" in checked.stdout
    repaired = node.cli("doctor", "--repair", "--min-age", "0")
    assert "(done: they are one pair now)" in repaired.stdout
    assert node.cli("doctor", "--min-age", "0").returncode == 0
    node.start()
    [job] = node.wait_for_jobs(lambda jobs: len(jobs) == 1, timeout=60)
    assert job["instances"] == 3


def test_a_database_restored_from_an_older_copy_is_refused_until_doctor_indexes_the_rest(
    node_factory, tmp_path: Path
) -> None:
    """Its identity is the spool's, so it started as if nothing were wrong, and the series
    acknowledged after the copy was made lay in the spool, never sent."""
    node = node_factory([], node={"receive_only": True}).start()
    before = write_ct_series(tmp_path / "before", 2, seed=1)
    after = write_ct_series(tmp_path / "after", 2, seed=2)
    assert storescu(node.port, before).returncode == 0
    node.wait_for_jobs(lambda jobs: len(jobs) == 1 and jobs[0]["status"] == "done")
    database, copy = node.data_dir / "dicomnode.sqlite", tmp_path / "copy.sqlite"
    with sqlite3.connect(database) as connection:  # the backup the README shows
        connection.execute("VACUUM INTO ?", (str(copy),))
    assert storescu(node.port, after).returncode == 0
    node.wait_for_jobs(lambda jobs: len(jobs) == 2 and jobs[0]["status"] == "done")
    node.stop()
    for file in node.data_dir.glob("dicomnode.sqlite*"):
        file.unlink()
    shutil.copyfile(copy, database)  # restored

    line = refusal(node)
    assert "the database is older than the spool" in line
    assert "(generation 1; the spool saw 2): was it restored from a copy?" in line
    assert "`dicomnode doctor --repair --min-age 0` indexes it" in line
    node.cli("doctor", "--repair", "--min-age", "0")
    node.start()
    jobs = node.wait_for_jobs(lambda jobs: len(jobs) == 2 and jobs[0]["status"] == "done")
    assert jobs[0]["series_uid"] == dcmread(after[0], stop_before_pixels=True).SeriesInstanceUID


def test_another_nodes_spool_is_refused(node_factory, tmp_path: Path) -> None:
    first = node_factory([], node={"receive_only": True}).start()
    first.stop()
    second = node_factory(
        [],
        node={
            "receive_only": True,
            "database_url": f"sqlite:///{tmp_path / 'second.sqlite'}",
        },
    ).start()
    second.stop()
    swapped = NodeProcess(
        tmp_path / "swapped",
        [],
        {
            "node": {
                "receive_only": True,
                "data_dir": str(first.data_dir),
                "database_url": f"sqlite:///{tmp_path / 'second.sqlite'}",
            }
        },
    )
    line = refusal(swapped)
    assert "another node's data folder or database" in line
    # doctor --repair changes nothing of such a pair (the other node may be alive) unless told
    refused = swapped.cli("doctor", "--repair", "--min-age", "0", check=False)
    assert refused.returncode == 2 and "`doctor --repair` changed nothing" in refused.stderr
    assert (first.data_dir / "spool" / "spool-identity").read_text() != ""
    adopted = swapped.cli("doctor", "--repair", "--adopt-spool", "--min-age", "0")
    assert "(done: they are one pair now)" in adopted.stdout
    try:
        swapped.start()  # one pair now
    finally:
        swapped.stop()  # not the factory's: stopped here


def test_a_node_from_before_identities_starts_whatever_its_spool_holds(
    node_factory, tmp_path: Path
) -> None:
    """An upgraded node whose every series was purged holds no job and no instance; a stray
    file in its spool (a store killed before its commit) made the first version of the check
    take it for a lost database."""
    node = node_factory([], node={"receive_only": True}).start()
    node.stop()
    (node.data_dir / "spool" / "spool-identity").unlink()  # as a version before identities
    with sqlite3.connect(node.data_dir / "dicomnode.sqlite") as connection:
        connection.execute("DROP TABLE spool_identity")
    stray = node.data_dir / "spool" / "instances" / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"a fragment")
    node.start()
    assert (node.data_dir / "spool" / "spool-identity").is_file()


def test_a_spool_gone_under_a_running_node_refuses_stores_and_keeps_its_jobs(
    node_factory, ct_series: list[Path]
) -> None:
    """Before, a job whose inputs vanished with the spool was dead at once, and an instance
    received meanwhile would have gone to the system disk, hidden once the disk was back."""
    node = node_factory([_unreachable()]).start()
    assert storescu(node.port, ct_series[:3]).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "failed")
    spool = node.data_dir / "spool"
    away = node.data_dir / "spool-away"
    spool.rename(away)  # as an unmount leaves it: the folder's contents gone
    spool.mkdir()
    try:
        before = len(node.log())
        node.wait_for_log("the spool is not there", since=before, timeout=30)
        storing = len(node.log())
        storescu(node.port, ct_series[3:4])
        said = node.log()[storing:]
        assert "C-STORE failed status=0xA700" in said and "the spool is not there" in said
        assert not list(spool.rglob("*.dcm"))  # nothing went where the disk is not
        [job] = node.jobs()
        assert job["status"] == "failed", job  # retried, not dead
    finally:
        shutil.rmtree(spool)
        away.rename(spool)
    assert os.path.isfile(spool / "spool-identity")


def test_a_spool_away_for_longer_than_the_retries_last_costs_its_jobs_no_attempt(
    node_factory, ct_series: list[Path]
) -> None:
    """Each retry while the spool was away was an attempt of the job: an outage longer than
    MAX_PROCESSING_ATTEMPTS retries (about an hour at the defaults) left its jobs dead. Here
    the retries come every 0.2 s."""
    fast = {"initial_delay_seconds": 0.2, "max_delay_seconds": 0.2, "max_attempts": 10_000}
    node = node_factory([_unreachable()], retry=fast).start()
    assert storescu(node.port, ct_series[:3]).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and all(job["attempts"] >= 2 for job in jobs))
    spool = node.data_dir / "spool"
    away = node.data_dir / "spool-away"
    spool.rename(away)
    spool.mkdir()
    try:
        node.wait_for_log("the spool is not there", since=0, timeout=30)
        time.sleep(1)  # an attempt under way when the spool went ends
        before = {job["id"]: job["attempts"] for job in node.jobs()}
        time.sleep(4)  # 20 retry delays: MAX_PROCESSING_ATTEMPTS (8) twice over
        during = node.jobs()
        assert {job["id"]: job["attempts"] for job in during} == before
        assert all(job["status"] == "failed" for job in during), during
    finally:
        shutil.rmtree(spool)
        away.rename(spool)
    node.wait_for_jobs(lambda jobs: all(job["attempts"] > before[job["id"]] for job in jobs))
    assert "scheduled task ran again" in node.log()


def test_a_spool_that_cannot_take_a_write_says_so(tmp_path: Path) -> None:
    """What /readyz asks of the disk (a read-only disk keeps its free space)."""
    spool = Spool(tmp_path / "spool")
    spool.check_writable()
    assert not list(spool.tmp_dir.iterdir())
    shutil.rmtree(spool.tmp_dir)
    spool.tmp_dir.write_bytes(b"")  # no folder to write in: ENOTDIR, as EROFS would be
    with pytest.raises(SpoolError, match=f"cannot write in {spool.tmp_dir}"):
        spool.check_writable()


def test_retention_leaves_a_spool_that_went_away_alone(tmp_path: Path) -> None:
    """Its rows purged, the files (back with the disk) were orphans that `doctor --repair`
    sends again."""
    db = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    spool = Spool(tmp_path / "spool")
    claim_both(db, spool)
    spool.identity_path.unlink()
    with pytest.raises(SpoolError, match="the spool is not there"):
        purge_delivered(Settings(), db, spool)


def test_another_disk_in_the_spools_place_is_told_apart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.claim_identity("one")
    spool.identity_path.write_text("two\n")
    with pytest.raises(SpoolError, match="names spool two, not one"):
        spool.check_identity_kept()
    assert Spool(tmp_path / "spool", identity="one").identity() == "two"
    with pytest.raises(SpoolError, match="names spool two, not one"):
        Spool(tmp_path / "spool", identity="one").check_identity_kept()


def test_a_spool_that_loses_its_identity_refuses_to_store(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.claim_identity("one") == "one"
    assert spool.claim_identity("two") == "one"  # the first stands
    spool.identity_path.unlink()
    with pytest.raises(SpoolError, match="the spool is not there"):
        spool.write_instance("1.2", "1.2.3", "1.2.3.4", b"data")
    assert not list(spool.instances_dir.rglob("*"))


def test_a_new_database_beside_a_spool_that_counted_rounds_takes_the_spools_count(
    tmp_path: Path,
) -> None:
    """A spool whose every series was purged, beside a new database: the pair starts, and
    keeps starting (the new row began at 0 while the spool said 3, and the start after the
    next round was refused as a restored copy)."""
    spool = Spool(tmp_path / "spool")
    first = open_database(f"sqlite:///{tmp_path / 'first.sqlite'}")
    claim_both(first, spool)
    for _ in range(3):
        advance_generation(first, spool)
    first.dispose()
    fresh = open_database(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    try:
        claim_both(fresh, spool)
        advance_generation(fresh, spool)
        assert (recorded_generation(fresh), spool.generation()) == (4, 4)
        assert identity_problem(fresh, spool) is None
        # An admin's repair never lowers a count a round raised meanwhile.
        assert raise_generation(fresh, 2) == 4
    finally:
        fresh.dispose()
