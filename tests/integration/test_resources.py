"""Limits that keep the node alive on a busy or full machine: disk, instance size, associations,
and the retention that keeps the spool from growing without end."""

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnode.db import open_database
from tests.conftest import pacs_destination
from tests.support.cli import dicomnode
from tests.support.dcmtk import echoscu, storescu
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.node import part_of
from tests.support.orthanc import Orthanc
from tests.support.ports import wait_for_port
from tests.support.scu import c_store, open_association
from tests.support.series import series_instance_uid, sop_instance_uid, write_ct_series


def test_low_disk_refuses_stores_with_out_of_resources_and_doctor_says_why(
    node_factory, ct_series: list[Path]
) -> None:
    petabyte = 10**9
    node = node_factory([], node={"min_free_disk_mb": petabyte}).start()
    assert f"below node.min_free_disk_mb={petabyte}: every C-STORE is refused" in node.log()

    for instance in ct_series[:3]:
        status = c_store(node.port, instance)
        assert status is not None and int(status.Status) == 0xA700
        assert f"node.min_free_disk_mb={petabyte}" in status.ErrorComment
    # The disk's state, not the instance's: one line per sender a minute, not one per instance.
    assert node.log().count("C-STORE failed status=0xA700") == 1
    assert not list((node.data_dir / "spool" / "instances").rglob("*.dcm"))
    assert node.jobs() == []

    doctor = node.cli("doctor", check=False)
    assert doctor.returncode == 1
    assert f"below node.min_free_disk_mb={petabyte}" in doctor.stdout
    assert echoscu(node.port).returncode == 0  # still up, still answering


@pytest.mark.serial  # a few MB written by a test running beside it would change the answer
def test_an_instance_that_would_eat_into_the_free_space_reserve_is_refused(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    """`min_free_disk_mb` is a reserve: an instance that fits above it is taken, one whose
    bytes would leave less is refused (before, the disk could be filled to 0 bytes, where
    retention cannot record a deletion). Headroom at start: 4 MB (drift of other writes)."""
    [big] = write_ct_series(tmp_path / "big", 1, size=2900)  # ~16 MB of pixels
    free = shutil.disk_usage(tmp_path).free // (1024 * 1024)  # the data_dir's file system
    node = node_factory([], node={"max_instance_mb": 64, "min_free_disk_mb": free - 4}).start()
    status = c_store(node.port, big)
    assert status is not None and int(status.Status) == 0xA700, status
    assert f"node.min_free_disk_mb={free - 4} MB: storing it" in status.ErrorComment
    assert re.search(
        r"storing it \(16\.\d MB\) would leave less free in \S+ \(\d+\.\d MB free\)", node.log()
    )
    small = c_store(node.port, ct_series[0])  # ~0.5 MB
    assert small is not None and int(small.Status) == 0x0000, small


def test_a_node_whose_callers_could_take_more_memory_than_there_is_says_so_at_start(
    node_factory, ct_series: list[Path]
) -> None:
    """Each association may hold an instance of node.max_instance_mb in memory: past the host's
    memory (or its container's limit), a few large instances at once end the node by the OOM
    killer. It still starts and receives: the settings are the operator's to choose."""
    ten_terabytes = 10**7
    node = node_factory([], node={"max_instance_mb": ten_terabytes}).start()
    said = node.wait_for_log("MEMORY: callers may make the listener hold")
    assert "GiB at once (node.max_associations=10 x node.max_instance_mb=10000000)" in said
    assert re.search(r"(this host has|the limit in \S+ is) [0-9.]+ GiB: a few large", said)
    assert storescu(node.port, ct_series[:1]).returncode == 0
    assert node.log().count("MEMORY:") == 1


def test_an_instance_over_the_size_limit_is_aborted_and_the_others_are_taken(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    [big] = write_ct_series(tmp_path / "big", 1, size=1100)  # 2.4 MB of pixels
    node = node_factory([], node={"max_instance_mb": 1}).start()

    # Counted as it arrives: the association is aborted once past the budget, before the
    # instance is whole in memory.
    assert c_store(node.port, big) is None
    assert "calling_aet=RAWSCU reason=more than" in node.log()
    assert f"(node.max_instance_mb) while receiving sop={sop_instance_uid(big)}" in node.log()
    assert storescu(node.port, ct_series).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "stored")
    assert job["instances"] == len(ct_series)


def test_associations_over_the_limit_are_rejected_and_logged_until_one_closes(
    node_factory,
) -> None:
    node = node_factory([], node={"max_associations": 2}).start()
    # Port probes (connect, close: what a load balancer does) must not take a slot.
    for _ in range(3):
        wait_for_port(node.port)
    held = [open_association(node.port) for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        third = echoscu(node.port)
        assert third.returncode != 0 and "Association Rejected" in third.stderr
        assert (
            "association rejected: Local limit exceeded (node.max_associations=2) "
            "calling_aet=ECHOSCU"
        ) in node.log()
    finally:
        held[0].release()
    assert echoscu(node.port).returncode == 0
    held[1].release()


def test_retention_purges_delivered_series_and_keeps_failed_ones(
    node_factory, tmp_path: Path
) -> None:
    pacs = FaultyScp().start()
    try:
        node = node_factory(
            [pacs.destination()],
            retention={"keep_days": 3 / 86400, "check_seconds": 1},  # three seconds
            enhance={"methods": ["baseline"]},
        )
        node.start()
        delivered = write_ct_series(tmp_path / "delivered", 3)
        assert storescu(node.port, delivered).returncode == 0
        # jobs 1 and 2: the originals and the derived series of the first series (by the log:
        # retention may purge them within 3 s, before a loaded machine's `jobs list` sees them)
        node.wait_for_log("job done job=1 ")
        node.wait_for_log("job done job=2 ")
        pacs.behave(Behaviour(status=0xC000))  # the next series is refused for good
        refused = write_ct_series(tmp_path / "refused", 2, seed=1)
        assert storescu(node.port, refused).returncode == 0
        node.wait_for_jobs(lambda jobs: sum(job["status"] == "dead" for job in jobs) == 2)

        # The delivered series leaves the spool and the job table; the dead one stays whole.
        dead = node.wait_for_jobs(lambda jobs: len(jobs) == 2 and jobs[0]["id"] == 4, timeout=30)
        assert {job["status"] for job in dead} == {"dead"}
        assert {job["instances"] for job in dead} == {2}
        spool = node.data_dir / "spool"
        kept = sorted(path.stem for path in (spool / "instances").rglob("*.dcm"))
        assert kept == sorted(sop_instance_uid(path) for path in refused)
        assert f"purged series={series_instance_uid(delivered[0])}" in node.log()
        assert not (spool / "outbox" / "2").exists()  # job 2's derived series and report
        assert len(list((spool / "outbox" / "4").rglob("*.dcm"))) == 2 + 1
        assert "0 series delivered more than" in node.cli("purge", "--dry-run").stdout
    finally:
        pacs.stop()


def test_a_series_over_max_series_mb_is_not_enhanced_and_its_originals_arrive(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    """A job holds its series in memory (~3 MB per 512x512 slice): one series past
    `enhance.max_series_mb` must not take the node's memory, and with it the receiver. The
    derived job stops loading at the first image past it and ends with the reason instead."""
    node = node_factory(
        [pacs_destination(orthanc)], enhance={"methods": ["baseline"], "max_series_mb": 1}
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    job = part_of(node.wait_for_parts(derived="done", timeout=120), "derived")
    uid = series_instance_uid(ct_series[0])
    reason = job["details"]["enhancement"]
    assert reason.startswith(f"skipped: too large to enhance: series={uid}, 12 instances, more")
    assert "enhance.max_series_mb=1 MB" in reason and "send the series again" in reason
    logged = f"WARNING dicomnode.pipeline.runner series not enhanced job={job['id']} series={uid}"
    assert f"{logged}: too large to enhance" in node.log()
    assert len(orthanc.instance_ids()) == len(ct_series)  # the originals, nothing derived
    assert not list((node.data_dir / "spool" / "outbox").rglob("*.dcm"))


@pytest.fixture
def small_file_system(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only: the CI runs as root; elsewhere the test is skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=False
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_admin_command_on_a_full_disk_says_the_disk_is_full(
    small_file_system: Path, tmp_path: Path
) -> None:
    """At 0 bytes free SQLite says only "disk I/O error"; `doctor` (and every admin command)
    adds the free space, the one thing to fix first."""
    data_dir = small_file_system / "data"
    open_database(f"sqlite:///{data_dir / 'dicomnode.sqlite'}").engine.dispose()
    # Unbuffered: a buffer left to flush at close would raise ENOSPC outside the suppress.
    with (
        (small_file_system / "filler").open("wb", buffering=0) as filler,
        contextlib.suppress(OSError),
    ):
        while True:
            filler.write(bytes(65536))
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{data_dir}"\n')
    doctor = dicomnode("doctor", "--config", str(config))
    assert doctor.returncode == 2, doctor.stderr
    assert f"({data_dir} has 0 MB free: make room first)" in doctor.stderr
