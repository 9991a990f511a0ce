"""SIGKILL at each stage: whatever got a Success status reaches the PACS, once per UID.

The node is killed (no clean-up of any kind) while an association is storing, while a job is
being enhanced and while a series is being forwarded; each time it is started again on the same
data and must finish the work, with the database and the spool in agreement (`doctor`).
"""

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ON_BOTH_DATABASES, pacs_destination
from tests.support.dcmtk import storescu
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.node import NodeProcess, part_of
from tests.support.orthanc import Orthanc
from tests.support.scu import c_store
from tests.support.series import sop_instance_uid, write_ct_series

pytestmark = ON_BOTH_DATABASES

INJECTED = "tests.support.injected_methods"  # the `slow` method


def assert_consistent(node: NodeProcess, unacknowledged: frozenset[str] = frozenset()) -> None:
    """The SQLite file intact (on PostgreSQL the server answers for that), no row without its
    file, and no file without a row except, possibly, an instance the kill caught between its
    file's rename and its row's commit (never answered Success, so its sender still has it)."""
    sqlite_file = node.data_dir / "dicomnode.sqlite"
    if sqlite_file.exists():
        with sqlite3.connect(sqlite_file) as database:
            assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    report = json.loads(node.cli("doctor", "--json", "--min-age", "0", check=False).stdout)
    assert report["missing_files"] == [], report
    assert {Path(path).stem for path in report["orphan_files"]} <= unacknowledged, report


def test_killed_while_receiving_every_acknowledged_instance_is_delivered_once(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "series", 40)
    node = node_factory([pacs_destination(orthanc)], completion={"series_quiet_seconds": 2})
    node.start()
    acknowledged: list[str] = []
    killer = threading.Thread(
        target=lambda: (wait_for(lambda: len(acknowledged) >= 8), node.kill()), daemon=True
    )
    killer.start()
    for path in files:  # one association per instance: the kill lands mid-stream
        status = c_store(node.port, path)
        if status is not None and int(status.Status) == 0x0000:
            acknowledged.append(sop_instance_uid(path))
    killer.join(timeout=30)
    assert 8 <= len(acknowledged) < len(files)

    node.start()
    node.wait_for_jobs(lambda jobs: jobs and all(job["status"] == "done" for job in jobs))
    delivered = Counter(orthanc.sop_instance_uids())
    sent = {sop_instance_uid(path) for path in files}
    assert set(acknowledged) <= set(delivered) <= sent
    assert set(delivered.values()) == {1}
    assert_consistent(node, frozenset(sent - set(acknowledged)))


def test_killed_while_enhancing_the_job_resumes_and_each_derived_uid_arrives_once(
    node_factory,
    orthanc: Orthanc,
    ct_series: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A method that runs until the test lets it keeps the derived job in "processing" until
    # the kill, however slowly a loaded machine answers `jobs list` (with 8 s, the kill could
    # come after the job was done), while the originals job (job 1) has long delivered.
    go_on = tmp_path / "go-on"
    monkeypatch.setenv("DICOMNODE_TEST_SLOW_UNTIL", str(go_on))
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["slow"], "plugins": [INJECTED], "self_check": False},
        worker={"lease_seconds": 5},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_parts(derived="processing")
    node.kill()

    go_on.touch()
    node.start()
    jobs = node.wait_for_parts(derived="done", timeout=240)
    # The attempt the kill cut short is in the history, not held against the job's attempts.
    assert part_of(jobs, "derived")["attempts"] == 1
    assert part_of(jobs, "originals")["attempts"] == 1
    assert "job's worker process is gone, queued again job=2" in node.log()
    delivered = Counter(orthanc.sop_instance_uids())
    # originals + one derived image each + one metrics report, each UID exactly once
    assert len(delivered) == 2 * len(ct_series) + 1
    assert set(delivered.values()) == {1}
    outbox = node.data_dir / "spool" / "outbox" / "2"
    assert len(list(outbox.rglob("*.dcm"))) == len(ct_series) + 1
    assert_consistent(node)


def test_killed_mid_forward_the_series_is_sent_again_at_once_and_completes(
    node_factory, tmp_path: Path
) -> None:
    """The killed process is gone from this host: the restarted node queues its job again at
    the start, not after worker.lease_seconds (10 minutes here, which the test does not wait)."""
    slow = FaultyScp().start()
    slow.behave(Behaviour(delay_seconds=0.2))
    try:
        files = write_ct_series(tmp_path / "series", 30)
        node = node_factory([slow.destination()], worker={"lease_seconds": 600}).start()
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: len(slow.stored) >= 5, timeout=60)
        killed = node.pid
        node.kill()
        time.sleep(0.5)  # the instance in flight at the kill: the SCP finishes storing it
        before_kill = set(slow.stored)
        assert len(before_kill) < len(files)

        slow.behave(Behaviour())
        node.start()
        [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "done", timeout=60)
        assert job["attempts"] == 1  # the one the kill cut short is not held against it
        assert job["deliveries"][0]["sent"] == len(files)
        assert set(slow.stored) == {sop_instance_uid(path) for path in files}
        # At-least-once: only what the dead attempt had sent is received a second time.
        assert {uid for uid, times in slow.stored.items() if times > 1} <= before_kill
        reclaimed = node.log().split("job's worker process is gone, queued again job=1 series=")
        assert len(reclaimed) == 2 and f":{killed}:" in reclaimed[1].splitlines()[0]
        assert_consistent(node)
    finally:
        slow.stop()


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.02)
