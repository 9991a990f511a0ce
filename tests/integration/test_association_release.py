"""Releasing an association we requested never hangs (dicomnode/dicom/release.py), against a
real pynetdicom peer over loopback that answers Storage Commitment on the same association."""

import threading
import time
from collections.abc import Iterator

import pytest
from pydicom.uid import generate_uid
from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel

from dicomnode.config import NetworkSettings
from dicomnode.dicom.association import CONNECTION_TUNING_HANDLER, configure_ae
from dicomnode.dicom.commitment import (
    COMMITMENT_INSTANCE_UID,
    REQUEST_ACTION_TYPE,
    CommitmentRequest,
    Reference,
    request_dataset,
)
from dicomnode.dicom.release import ReportThreads, release
from tests.support.commitment import CommitmentPeer

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def peer() -> Iterator[CommitmentPeer]:
    peer = CommitmentPeer().start()
    yield peer
    peer.stop()


def _associate(peer: CommitmentPeer, handlers: list | None = None) -> Association:  # type: ignore[type-arg]
    ae = configure_ae("NODE", NetworkSettings(), max_pdu_size=0)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1",
        peer.port,
        ae_title=peer.ae_title,
        ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
        evt_handlers=[CONNECTION_TUNING_HANDLER, *(handlers or [])],  # as the node's own
    )
    assert assoc.is_established
    return assoc


def _released_in_a_thread(assoc: Association, reports: ReportThreads | None = None) -> bool:
    """Whether release() returned within 10 s (it runs on a daemon thread, so that a hang
    fails the test instead of stopping it)."""
    done = threading.Thread(target=release, args=(assoc, 1.0, reports), daemon=True)
    done.start()
    done.join(10)
    return not done.is_alive()


def _paused(assoc: Association) -> None:
    """Wait until the reactor stopped at its (cleared) checkpoint."""
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 5
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)


def test_a_report_thread_saying_not_paused_cannot_hang_the_release(peer: CommitmentPeer) -> None:
    assoc = _associate(peer)
    _paused(assoc)
    # What pynetdicom's thread serving an N-EVENT-REPORT writes on its way out (#820): ignored,
    # only the reactor says whether it is paused.
    threading.Thread(target=setattr, args=(assoc, "_is_paused", False)).start()
    time.sleep(0.05)
    assert _released_in_a_thread(assoc), "release() hung"
    assert assoc.is_released and not assoc.is_aborted


def test_a_reactor_that_never_pauses_means_an_abort_not_a_hang(peer: CommitmentPeer) -> None:
    assoc = _associate(peer)
    _paused(assoc)
    assoc.__dict__["_is_paused"] = False  # whatever the cause: the flag never turns
    try:
        assert _released_in_a_thread(assoc), "release() hung"
        assert assoc.is_aborted and not assoc.is_established
    finally:
        assoc.__dict__["_is_paused"] = True  # free a release() still waiting


def test_a_release_waits_for_the_report_being_served_then_releases(peer: CommitmentPeer) -> None:
    reports = ReportThreads()
    served = threading.Event()
    finished: list[float] = []

    def slow_report(_event: Event) -> tuple[int, None]:
        served.set()
        time.sleep(0.5)  # e.g. the database write that files it
        finished.append(time.monotonic())
        return 0x0000, None

    released: list[float] = []
    assoc = _associate(
        peer,
        [
            (evt.EVT_N_EVENT_REPORT, reports.tracked(slow_report)),
            (evt.EVT_RELEASED, lambda _event: released.append(time.monotonic())),
        ],
    )
    request = CommitmentRequest(generate_uid(), (Reference(CT_IMAGE, generate_uid()),))
    status, _reply = assoc.send_n_action(
        request_dataset(request),
        REQUEST_ACTION_TYPE,
        StorageCommitmentPushModel,
        COMMITMENT_INSTANCE_UID,
    )
    assert status.Status == 0x0000
    assert served.wait(10), "the peer sent no report"
    assert _released_in_a_thread(assoc, reports), "release() hung"
    assert assoc.is_released and not assoc.is_aborted
    assert finished and released and finished[0] <= released[0]
