"""The node's Storage Commitment SCP on one association, its network played by the test."""

import logging
import sqlite3
import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION, N_EVENT_REPORT
from pynetdicom.events import Event

from dicomnode.config import NodeSettings, Peer, Settings
from dicomnode.db import open_database
from dicomnode.dicom.commitment import (
    COMMITMENT_CLASS_UID,
    COMMITMENT_INSTANCE_UID,
    REQUEST_ACTION_TYPE,
    CommitmentReport,
    CommitmentRequest,
    Reference,
    report_dataset,
    request_dataset,
)
from dicomnode.dicom.reactor import send_messages_in_order
from dicomnode.receive.commitment import CommitmentResponder
from dicomnode.receive.scp import StorageReceiver
from dicomnode.receive.status import SUCCESS
from dicomnode.receive.store_deadline import DatabaseWaits
from dicomnode.spool import Spool
from tests.unit.test_reactor_responses import UnreadableBytes

CT = "1.2.840.10008.5.1.4.1.1.2"


def action_request(transaction_uid: str) -> N_ACTION:
    """A modality's N-ACTION asking for the commitment of one instance, encoded as on the wire."""
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, True
    write_dataset(
        encoded, request_dataset(CommitmentRequest(transaction_uid, (Reference(CT, "1.2.3.4.1"),)))
    )
    request = N_ACTION()
    request.MessageID = 1
    request.RequestedSOPClassUID = COMMITMENT_CLASS_UID
    request.RequestedSOPInstanceUID = COMMITMENT_INSTANCE_UID
    request.ActionTypeID = REQUEST_ACTION_TYPE
    request.ActionInformation = BytesIO(encoded.getvalue())
    return request


def test_a_report_whose_response_fails_to_encode_is_never_sent_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(peers=[Peer("MODALITY", "127.0.0.1", 11112)])
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    responder = CommitmentResponder(settings, db, DatabaseWaits(1, 5.0))
    made = Association(AE(), "acceptor")
    made.requestor.ae_title = "MODALITY"
    send_messages_in_order(made)
    made.bind(evt.EVT_DIMSE_SENT, responder.handle_sent)
    context = build_context(COMMITMENT_CLASS_UID, ImplicitVRLittleEndian)
    context.context_id = 1
    asked = Event(
        made, evt.EVT_N_ACTION, {"request": action_request("1.2.3.99"), "context": context.as_tuple}
    )
    assert responder.handle_action(asked) == (SUCCESS, None)

    response = N_ACTION()
    response.MessageIDBeingRespondedTo = 1
    response.AffectedSOPClassUID = COMMITMENT_CLASS_UID
    response.AffectedSOPInstanceUID = COMMITMENT_INSTANCE_UID
    response.ActionTypeID = REQUEST_ACTION_TYPE
    response.Status = SUCCESS
    response.ActionReply = UnreadableBytes(bytes(100))
    with pytest.raises(OSError):
        made.dimse.send_msg(response, 1)
    assert not [t for t in threading.enumerate() if t.name.startswith("commitment-report-")]

    with caplog.at_level(logging.WARNING, logger="dicomnode.receive.commitment"):
        responder.forget(Event(made, evt.EVT_CONN_CLOSE, {}))
    assert (
        "storage commitment report not sent transaction=1.2.3.99 calling_aet=MODALITY: the "
        "association ended before its N-ACTION response went out"
    ) in caplog.text


def report_event(transaction_uid: str) -> Event:
    """A PACS's N-EVENT-REPORT of one committed instance, on an association it opened to us."""
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, True
    report = CommitmentReport(transaction_uid, (Reference(CT, "1.2.3.4.1"),), ())
    write_dataset(encoded, report_dataset(report))
    request = N_EVENT_REPORT()
    request.MessageID = 1
    request.AffectedSOPClassUID = COMMITMENT_CLASS_UID
    request.AffectedSOPInstanceUID = COMMITMENT_INSTANCE_UID
    request.EventTypeID = 1  # Storage Commitment Request Successful
    request.EventInformation = BytesIO(encoded.getvalue())
    made = Association(AE(), "acceptor")
    made.requestor.ae_title = "PACS"
    context = build_context(COMMITMENT_CLASS_UID, ImplicitVRLittleEndian)
    context.context_id = 1
    return Event(made, evt.EVT_N_EVENT_REPORT, {"request": request, "context": context.as_tuple})


def test_a_report_the_database_cannot_file_in_time_is_answered_0x0110_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Filing a report waited for the database as long as it hung (here SQLite's write lock
    held by another process, past its 30 s busy timeout), holding the PACS's association and
    one of the listener's places; now as long as a store would wait."""
    path = tmp_path / "node.sqlite"
    db = open_database(f"sqlite:///{path}")
    settings = Settings(node=NodeSettings(data_dir=str(tmp_path), store_timeout_seconds=0.5))
    receiver = StorageReceiver(settings, Spool(tmp_path / "spool"), db)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with caplog.at_level(logging.WARNING, logger="dicomnode.receive.store_deadline"):
            assert receiver.handle_report(report_event("1.2.3.98")) == (0x0110, None)
            assert receiver.handle_report(report_event("1.2.3.99")) == (0x0110, None)
    finally:
        holder.rollback()
        holder.close()
    [said] = [r.getMessage() for r in caplog.records]  # the second within the minute: counted
    assert said == (
        "storage commitment report not filed, answered 0x0110 calling_aet=PACS: the database "
        "did not answer within 0.5 s (node.store_timeout_seconds)"
    )
    assert receiver.handle_report(report_event("1.2.3.99")) == (SUCCESS, None)  # an unknown one
