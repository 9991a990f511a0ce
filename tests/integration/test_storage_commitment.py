"""Storage Commitment (PS3.4 Annex J) in both directions, with real peers.

As SCU: a delivery with `storage_commitment = true` is done only once the destination reported
every instance committed (a real Orthanc, and in-process peers that fail some instances once or
never report). As SCP: a modality learns which instances the node keeps, also after a SIGKILL.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.support.commitment import CommitmentPeer, Modality
from tests.support.dcmtk import storescu
from tests.support.faulty_scp import FaultyScp
from tests.support.metrics import Scrape
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.scu import c_store
from tests.support.series import sop_instance_uid, write_ct_series


def job_details(node: NodeProcess, job_id: int) -> dict[str, Any]:
    return json.loads(node.cli("jobs", "show", str(job_id), "--json").stdout)


def only_job_is(status: str):  # type: ignore[no-untyped-def]
    return lambda jobs: len(jobs) == 1 and jobs[0]["status"] == status


@pytest.fixture
def listening_modality() -> Iterator[Modality]:
    """A modality whose listener (its [[peers]] address) takes reports on new associations."""
    modality = Modality().start()
    yield modality
    modality.stop()


def node_holding(node_factory, modality: Modality, series: list[Path]) -> NodeProcess:  # type: ignore[no-untyped-def]
    """A started node with `modality` in [[peers]], holding `series` stored by it (the node
    factory stops it at teardown)."""
    node = node_factory([], peers=[modality.peer()]).start()
    assert storescu(node.port, series, calling_aet=modality.ae_title).returncode == 0
    return node


def test_series_is_done_only_after_orthanc_reports_every_instance_committed(
    tmp_path: Path, node_factory, ct_series: list[Path]
) -> None:
    orthanc_port = free_port()
    destination = {
        "name": "pacs",
        "ae_title": Orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc_port,
        "storage_commitment": True,
        "commitment_timeout_seconds": 30,
    }
    node = node_factory([destination])
    # Orthanc sends its report over a new association to the modality it knows by AE title.
    modalities = {"node": {"AET": node.ae_title, "Host": "127.0.0.1", "Port": node.port}}
    orthanc = Orthanc(tmp_path / "orthanc", dicom_port=orthanc_port, modalities=modalities)
    orthanc.start()
    try:
        node.start()
        assert storescu(node.port, ct_series).returncode == 0
        [job] = node.wait_for_jobs(only_job_is("done"), timeout=90)
        details = job_details(node, job["id"])
        [delivery] = details["deliveries"]
        assert delivery["status"] == "done" and delivery["sent"] == len(ct_series)
        assert delivery["commitment"] == {"committed": len(ct_series), "failed": 0, "pending": 0}
        assert sorted(orthanc.sop_instance_uids()) == sorted(map(sop_instance_uid, ct_series))
        shown = node.cli("jobs", "show", str(job["id"])).stdout
        assert "storage commitment" in shown
        assert re.search(r"pacs\W+12\W+0\W+0", shown), shown
        assert "storage commitment confirmed job=" in node.log()
        # Orthanc reported over a new association, to the node's listener
        assert "calling_aet=ORTHANC committed=12 failed=0" in node.log()
    finally:
        orthanc.stop()


def test_instances_reported_failed_are_sent_again_and_committed_next_attempt(
    node_factory, ct_series: list[Path]
) -> None:
    failing = {sop_instance_uid(ct_series[0]), sop_instance_uid(ct_series[5])}
    peer = CommitmentPeer(fail_once=set(failing)).start()
    try:
        node = node_factory([peer.destination()]).start()
        assert storescu(node.port, ct_series).returncode == 0
        [job] = node.wait_for_jobs(only_job_is("done"), timeout=90)
        assert job["attempts"] == 2
        [first, second] = peer.requests
        assert len(first.references) == len(ct_series)
        # only the two failed instances were sent again and asked for again
        assert {ref.sop_instance_uid for ref in second.references} == failing
        assert all(peer.stored[uid] == 2 for uid in failing)
        assert sum(peer.stored.values()) == len(ct_series) + 2
        [delivery] = job_details(node, job["id"])["deliveries"]
        assert delivery["commitment"] == {"committed": len(ct_series), "failed": 0, "pending": 0}
        assert "did not commit 2 of 12 instances (0x0112 for sop=" in node.log()
    finally:
        peer.stop()


@pytest.mark.parametrize(
    ("peer_says", "told"),
    [
        ({"action_status": 0x0124}, "refused the request with status 0x0124 (not authorised"),
        (
            {"fail_once": "all", "failure_reason": 0x0122},
            "a reason that sending again cannot change",
        ),
    ],
    ids=["not-authorised", "class-not-supported"],
)
def test_an_answer_that_asking_again_cannot_change_makes_the_delivery_dead_at_once(
    node_factory, ct_series: list[Path], peer_says: dict[str, object], told: str
) -> None:
    """A PACS that does not know the node (0x0124), or that cannot keep the SOP class (0x0122):
    before, each of retry.max_attempts sent the whole series again first."""
    if peer_says.get("fail_once") == "all":
        peer_says = {**peer_says, "fail_once": {sop_instance_uid(path) for path in ct_series}}
    peer = CommitmentPeer(**peer_says).start()  # type: ignore[arg-type]
    try:
        node = node_factory([peer.destination()]).start()
        assert storescu(node.port, ct_series).returncode == 0
        [job] = node.wait_for_jobs(only_job_is("dead"), timeout=90)
        assert job["attempts"] == 1
        assert told in job["error"]
        assert sum(peer.stored.values()) == len(ct_series)  # sent once
    finally:
        peer.stop()


def test_a_resend_sends_and_asks_for_every_instance_again(
    node_factory, ct_series: list[Path]
) -> None:
    # A resend is asked for because the PACS lost the series: what it once confirmed keeping
    # must go again (it was filtered out, and the resend reported done with nothing sent).
    peer = CommitmentPeer().start()
    try:
        node = node_factory([peer.destination()]).start()
        assert storescu(node.port, ct_series).returncode == 0
        [job] = node.wait_for_jobs(only_job_is("done"), timeout=90)
        before = len(node.log())
        node.cli("jobs", "resend", str(job["id"]))
        node.wait_for_log("storage commitment confirmed job=", since=before, timeout=90)
        [job] = node.wait_for_jobs(only_job_is("done"), timeout=90)
        assert len(peer.requests) == 2  # once each: no attempt retried
        assert len(peer.requests[1].references) == len(ct_series)  # everything asked again
        assert all(count == 2 for count in peer.stored.values())  # and sent again
        assert len(peer.stored) == len(ct_series)
        [delivery] = job_details(node, job["id"])["deliveries"]
        assert delivery["sent"] == len(ct_series)
        assert delivery["commitment"] == {"committed": len(ct_series), "failed": 0, "pending": 0}
    finally:
        peer.stop()


def test_a_peer_that_never_reports_makes_the_delivery_retry_then_die_naming_commitment(
    node_factory, ct_series: list[Path]
) -> None:
    peer = CommitmentPeer(silent=True).start()
    try:
        node = node_factory(
            [peer.destination(timeout=3)], retry={"max_attempts": 2}, http={"enabled": True}
        )
        node.start()
        assert storescu(node.port, ct_series[:3]).returncode == 0

        def awaited() -> float:  # what the metrics say the delivery waits for
            return Scrape(node.http_port).value("dicomnode_commitments_awaited", destination="peer")

        deadline = time.monotonic() + 60
        while awaited() < 3:
            assert time.monotonic() < deadline, node.log()[-2000:]
            time.sleep(0.2)
        [job] = node.wait_for_jobs(only_job_is("dead"), timeout=90)
        assert awaited() == 0  # the dead job's rows wait for nothing
        assert job["attempts"] == 2
        assert "storage commitment: no report from peer within" in job["error"]
        assert "destinations[0].commitment_timeout_seconds=3 s for 3 of 3 instances" in job["error"]
        assert len(peer.requests) == 2
        # asked twice, sent once: before, each attempt sent the series whole again first
        assert [len(request.references) for request in peer.requests] == [3, 3]
        assert sorted(peer.stored.values()) == [1, 1, 1]
        assert "delivery goes on where the last attempt stopped" in node.log()
        [delivery] = job_details(node, job["id"])["deliveries"]
        assert delivery["status"] == "dead"
        assert delivery["sent"] == 3
        assert delivery["commitment"] == {"committed": 0, "failed": 0, "pending": 3}
    finally:
        peer.stop()


def test_a_modality_learns_what_the_node_keeps_also_after_a_sigkill(
    node_factory, ct_series: list[Path]
) -> None:
    modality = Modality().start()
    try:
        node = node_factory([], peers=[modality.peer()]).start()
        assert '[[peers]]\nae_title = "MODALITY"' in node.cli("config", "show").stdout
        try:
            assert storescu(node.port, ct_series, calling_aet=modality.ae_title).returncode == 0
            stored = sorted(map(sop_instance_uid, ct_series))

            never_stored = "1.2.826.0.1.3680043.10.999.1"
            status, transaction = modality.ask(node.port, ct_series, (never_stored,))
            assert status == 0x0000
            report = modality.report_for(transaction)
            assert modality.via[transaction] == "same"
            assert sorted(ref.sop_instance_uid for ref in report.committed) == stored
            assert [(f.reference.sop_instance_uid, f.reason) for f in report.failed] == [
                (never_stored, 0x0112)
            ]

            node.kill()
            node.start()
            # released at once: the report comes over a new association to its [[peers]] address
            status, transaction = modality.ask(node.port, ct_series, stay=False)
            assert status == 0x0000
            report = modality.report_for(transaction)
            assert modality.via[transaction] == "new"
            assert sorted(ref.sop_instance_uid for ref in report.committed) == stored
            assert report.failed == ()
        finally:
            node.stop()
    finally:
        modality.stop()


def test_a_modality_may_echo_on_its_association_while_the_report_on_it_awaits_its_answer(
    node_factory, ct_series: list[Path]
) -> None:
    # The report's wait for the modality's answer took the C-ECHO request as that answer and
    # aborted the association: the echo went unanswered and the report had to go another way.
    modality = Modality()  # no listener: the report can only come on the modality's association
    node = node_factory([], peers=[modality.peer()]).start()
    try:
        assert storescu(node.port, ct_series, calling_aet=modality.ae_title).returncode == 0

        action, echo, transaction = modality.ask_and_echo_while_reported(node.port, ct_series)

        assert (action, echo) == (0x0000, 0x0000)
        assert modality.via == {transaction: "same"}
        report = modality.report_for(transaction)
        assert sorted(ref.sop_instance_uid for ref in report.committed) == sorted(
            map(sop_instance_uid, ct_series)
        )
        assert re.search(rf"report sent transaction={transaction} .*association=same", node.log())
        assert "not delivered" not in node.log()
    finally:
        node.stop()


def test_a_modality_that_releases_while_its_report_awaits_its_answer_is_released_then_called(
    node_factory, ct_series: list[Path], listening_modality: Modality
) -> None:
    # The node's reactor waited, paused, for the report's answer and never answered the release:
    # both sides waited out their timeouts and the association ended in an abort.
    modality = listening_modality
    node = node_holding(node_factory, modality, ct_series)

    action, released, transaction = modality.ask_and_release_while_reported(node.port, ct_series)

    assert (action, released) == (0x0000, True)
    report = modality.report_for(transaction)  # over a new association, to its listener
    assert modality.via == {transaction: "new"}
    assert len(report.committed) == len(ct_series)
    sent = node.wait_for_log(f"storage commitment report sent transaction={transaction}")
    assert "association=new" in sent
    assert "association aborted" not in node.log()


def test_two_reports_owed_on_one_association_both_go_on_it_once(
    node_factory, ct_series: list[Path], listening_modality: Modality
) -> None:
    # Two report senders waited on one association at once: the first to get its answer let
    # the reactor run again, which took the second's answer as a stray message; that report
    # waited out dimse_timeout and went again over a new association.
    modality = listening_modality
    node = node_holding(node_factory, modality, ct_series)

    statuses, transactions = modality.ask_twice(node.port, ct_series)

    assert statuses == [0x0000, 0x0000]
    assert modality.via == dict.fromkeys(transactions, "same")
    assert sorted(r.transaction_uid for r in modality.reports) == sorted(transactions)
    for transaction in transactions:
        assert re.search(rf"report sent transaction={transaction} .*=same", node.log())
    assert "not delivered" not in node.log()


def test_a_caller_without_a_peers_entry_is_refused_with_a_log_line(
    node_factory, ct_series: list[Path]
) -> None:
    node = node_factory([]).start()
    assert storescu(node.port, ct_series[:1]).returncode == 0
    status, _ = Modality(ae_title="STRANGER").ask(node.port, ct_series[:1], stay=False)
    assert status == 0x0124
    assert "storage commitment refused calling_aet=STRANGER" in node.log()
    assert "no [[peers]] entry" in node.log()


def test_a_destination_without_storage_commitment_makes_the_delivery_dead_saying_so(
    node_factory, ct_series: list[Path]
) -> None:
    scp = FaultyScp().start()  # stores, but offers no Storage Commitment context
    try:
        destination = {**scp.destination(), "storage_commitment": True}
        node = node_factory([destination]).start()
        assert storescu(node.port, ct_series[:2]).returncode == 0
        [job] = node.wait_for_jobs(only_job_is("dead"), timeout=60)
        assert job["attempts"] == 1
        assert "storage commitment: faulty (FAULTY@127.0.0.1:" in job["error"]
        assert (
            "accepted none of the proposed presentation contexts: Storage Commitment Push "
            "Model SOP Class (1.2.840.10008.1.20.1): abstract syntax not supported"
        ) in job["error"]
        assert sum(scp.stored.values()) == 2
    finally:
        scp.stop()


@pytest.mark.parametrize(
    ("on_duplicate", "answered"), [("replace_unless_foreign", 0xC000), ("keep", 0)]
)
def test_a_copy_refused_as_a_uid_collision_is_not_confirmed_to_its_sender(
    node_factory, tmp_path: Path, ct_series: list[Path], on_duplicate: str, answered: int
) -> None:
    """A modality that asks for the commitment of all it sent, the refused copy included, was
    told the node keeps it (it keeps another sender's image under that UID), and could then
    delete its only copy of that image. The sender of the kept copy is still told. With
    `on_duplicate = "keep"` the copy is acknowledged (first copy wins) but not kept: the same."""
    stored_by, refused_to = Modality(ae_title="CT_A"), Modality(ae_title="CT_B")
    peers = [stored_by.peer(), refused_to.peer()]
    settings = {"receive_only": True, "on_duplicate": on_duplicate}
    node = node_factory([], peers=peers, node=settings).start()
    kept = ct_series[:2]
    assert storescu(node.port, kept, calling_aet="CT_A").returncode == 0
    colliding = dcmread(ct_series[0])
    colliding.SeriesInstanceUID = generate_uid()
    colliding.PixelData = bytes(len(colliding.PixelData))
    colliding.save_as(tmp_path / "colliding.dcm")
    status = c_store(node.port, tmp_path / "colliding.dcm", calling_aet="CT_B")
    assert status is not None and status.Status == answered
    own = write_ct_series(tmp_path / "own", 2, seed=7)
    assert storescu(node.port, own, calling_aet="CT_B").returncode == 0

    _, transaction = refused_to.ask(node.port, [tmp_path / "colliding.dcm", *own])
    report = refused_to.report_for(transaction)
    assert sorted(ref.sop_instance_uid for ref in report.committed) == sorted(
        map(sop_instance_uid, own)
    )
    collided = sop_instance_uid(ct_series[0])
    assert [(f.reference.sop_instance_uid, f.reason) for f in report.failed] == [(collided, 0x0112)]
    said = node.wait_for_log("storage commitment not confirmed for 1 instance(s)")
    assert "calling_aet=CT_B: a copy of each was refused as a UID collision" in said
    assert f"first sop={collided}, kept from CT_A" in said

    _, transaction = stored_by.ask(node.port, kept)
    report = stored_by.report_for(transaction)
    assert sorted(ref.sop_instance_uid for ref in report.committed) == sorted(
        map(sop_instance_uid, kept)
    )
    assert report.failed == ()
