"""What an unattended node must survive: a destination that is down, and its own sudden death."""

import socket
from pathlib import Path

from tests.conftest import ON_BOTH_DATABASES, pacs_destination
from tests.support.dcmtk import storescu
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port

pytestmark = ON_BOTH_DATABASES


def test_destination_down_makes_the_job_retry_then_deliver_when_it_comes_up(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    pacs = Orthanc(tmp_path / "late-pacs", dicom_port=free_port())  # configured, not started
    node = node_factory([pacs_destination(pacs)]).start()
    assert storescu(node.port, ct_series).returncode == 0

    [job] = node.wait_for_jobs(
        lambda jobs: jobs and jobs[0]["status"] == "failed" and jobs[0]["attempts"] >= 2
    )
    delivery = job["deliveries"][0]
    assert delivery["status"] == "failed"
    assert "connection refused" in delivery["error"] or "cannot associate" in delivery["error"]

    pacs.start()
    try:
        [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "done")
        assert job["deliveries"][0]["sent"] == len(ct_series)
        assert len(pacs.instance_ids()) == len(ct_series)
    finally:
        pacs.stop()


def test_node_killed_between_receive_and_forward_loses_nothing(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    # A long quiet period: the node is killed while the series still waits to become a job.
    node = node_factory([pacs_destination(orthanc)], completion={"series_quiet_seconds": 3}).start()
    sent = storescu(node.port, ct_series)
    assert sent.returncode == 0, sent.stderr
    node.kill()
    assert node.jobs() == []

    node.start()
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
    assert job["instances"] == len(ct_series)
    assert len(orthanc.instance_ids()) == len(ct_series)


def test_job_held_by_a_killed_node_is_reclaimed_when_its_lease_lapses(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    # The destination port first belongs to a socket that never answers, so the job sits in
    # "forwarding" (waiting on the ACSE timeout) when the node is killed.
    port = free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.1", port))
    silent.listen(8)
    pacs = Orthanc(tmp_path / "pacs", dicom_port=port)
    node = node_factory(
        [pacs_destination(pacs)], worker={"lease_seconds": 5}, network={"acse_timeout": 60}
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "forwarding")
    node.kill()
    silent.close()

    pacs.start()
    try:
        node.start()
        [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "done")
        assert job["attempts"] == 1  # the dead node's attempt is not held against the job
        assert len(pacs.instance_ids()) == len(ct_series)
        assert "job's worker process is gone, queued again job=1" in node.log()
    finally:
        pacs.stop()
