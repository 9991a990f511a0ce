"""A series is complete when its sender says so (A-RELEASE after the last instance, then
`release_quiet_seconds` of quiet) or, whatever the sender did, after `series_quiet_seconds`.
The rule on a real SQLite file and PostgreSQL (the completion tick's row locks), then through a
real node with DCMTK and pynetdicom senders."""

import time
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

from dicomnode.db import Database
from dicomnode.db.instances import create_jobs_for_quiet_series, mark_series_released
from dicomnode.status import JobPart
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive
from tests.support.dcmtk import StoreScp, storescu
from tests.support.node import NodeProcess
from tests.support.series import write_ct_series

ORIGINALS = [JobPart.ORIGINALS]


def complete(db: Database, release_quiet: float = 0.2) -> list[int]:
    return create_jobs_for_quiet_series(db, 3600, ["pacs"], ORIGINALS, release_quiet)


@ON_BOTH_DATABASES
def test_a_released_series_is_complete_after_the_short_quiet_time(db: Database) -> None:
    receive(db, "1.2.3.4", 3)
    receive(db, "1.2.3.5", 3)
    mark_series_released(db, ["1.2.3.4"])
    assert complete(db) == []  # released, but not yet quiet for release_quiet_seconds
    time.sleep(0.3)
    assert len(complete(db)) == 1  # only the released series; the other waits for 3600 s
    assert complete(db, release_quiet=0) == []  # 0: the release rule is off


@ON_BOTH_DATABASES
def test_an_instance_after_the_release_waits_for_its_own_release(db: Database) -> None:
    receive(db, "1.2.3.4", 3)
    mark_series_released(db, ["1.2.3.4"])
    receive(db, "1.2.3.4", 1)  # another association is still sending into the series
    time.sleep(0.3)
    assert complete(db) == []
    mark_series_released(db, ["1.2.3.4"])
    time.sleep(0.3)
    assert len(complete(db)) == 1


def test_the_originals_go_seconds_after_the_sender_releases(tmp_path: Path) -> None:
    series = write_ct_series(tmp_path / "series", 5, seed=3)
    with StoreScp(tmp_path / "pacs") as pacs:
        node = NodeProcess(
            tmp_path / "node",
            [{"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": pacs.port}],
            {"completion": {"series_quiet_seconds": 3600, "release_quiet_seconds": 1}},
        ).start()
        try:
            assert storescu(node.port, series).returncode == 0
            (job,) = node.wait_for_jobs(lambda jobs: [j["status"] for j in jobs] == ["done"])
            assert job["part"] == "originals"  # well before series_quiet_seconds
            received = {dcmread(p).SOPInstanceUID for p in (tmp_path / "pacs").iterdir()}
            assert received == {dcmread(p).SOPInstanceUID for p in series}
        finally:
            node.stop()


def test_an_aborted_association_leaves_the_series_to_the_quiet_rule(tmp_path: Path) -> None:
    (path,) = write_ct_series(tmp_path / "series", 1, seed=4)
    node = NodeProcess(
        tmp_path / "node",
        [],
        {"completion": {"series_quiet_seconds": 3600, "release_quiet_seconds": 0.5}},
    ).start()
    try:
        ae = AE(ae_title="ABORTER")
        dataset = dcmread(path)
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.send_c_store(dataset).Status == 0x0000
        assoc.abort()  # the sender did not say it is done
        time.sleep(3)  # six release-quiet periods and several completion ticks
        assert node.jobs() == []
    finally:
        node.stop()
