"""The store lane on the network: DCMTK's storescu against the node's receiver, in this process
so that it can be seen which path stored each instance.

What is asserted: every instance arrives by the lane (pynetdicom's C-STORE handler never runs)
and its spooled file is byte for byte the file pynetdicom's path spools for the same send, with
the data set as sent, whether the data set came in one PDU or in many; C-ECHO still goes to
pynetdicom; a caller that breaks off a data set with another command is aborted, with a log line.
"""

import logging
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import text

from dicomnode.config import NetworkSettings, NodeSettings, Settings
from dicomnode.db.engine import open_database
from dicomnode.observe.counters import CONNECTIONS_ABORTED
from dicomnode.receive import guard
from dicomnode.receive.scp import StorageReceiver, start_receiver
from dicomnode.spool import Spool
from tests.support.dcmtk import echoscu, storescu
from tests.support.ports import free_port
from tests.support.series import write_ct_series


@dataclass
class _Receivers:
    """Receivers, each on its own spool and database; which instances pynetdicom's handler
    stored."""

    root: Path
    pynetdicom_stores: list[str] = field(default_factory=list)
    servers: list[ThreadedAssociationServer] = field(default_factory=list)

    def start(
        self, name: str, max_pdu_size: int, network: NetworkSettings | None = None
    ) -> tuple[int, Spool]:
        port = free_port()
        node = NodeSettings(host="127.0.0.1", port=port, max_pdu_size=max_pdu_size)
        spool = Spool(self.root / name / "spool")
        db = open_database(f"sqlite:///{self.database(name)}")
        settings = Settings(node=node, network=network or NetworkSettings())
        self.servers.append(start_receiver(settings, spool, db, quiet=True))
        return port, spool

    def database(self, name: str) -> Path:
        return self.root / name / "node.db"


@pytest.fixture
def receivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Receivers]:
    found = _Receivers(tmp_path)
    original = StorageReceiver.handle_store

    def counted(self: StorageReceiver, event: Event) -> Dataset | int:
        found.pynetdicom_stores.append(str(event.request.AffectedSOPInstanceUID))
        return original(self, event)

    monkeypatch.setattr(StorageReceiver, "handle_store", counted)
    yield found
    for server in found.servers:
        server.shutdown()
        server.server_close()


def _protocol_aborts() -> float:
    samples = CONNECTIONS_ABORTED.collect()[0].samples
    return next(
        s.value for s in samples if s.name.endswith("_total") and s.labels["reason"] == "protocol"
    )


@pytest.mark.parametrize("max_pdu_size", [1048576, 4096])  # the data set in one PDU; in ~30
def test_every_instance_comes_by_the_lane_and_is_stored_as_pynetdicom_stores_it(
    receivers: _Receivers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_pdu_size: int
) -> None:
    sent = write_ct_series(tmp_path / "series", 5, size=256)
    lane_port, lane_spool = receivers.start("lane", max_pdu_size)
    plain_port, plain_spool = receivers.start("pynetdicom", max_pdu_size)

    by_lane = storescu(lane_port, sent)
    assert receivers.pynetdicom_stores == []
    with monkeypatch.context() as patch:  # the other receiver's associations get no lane
        patch.setattr(guard, "pynetdicom_supports_lane", lambda _assoc: False)
        by_pynetdicom = storescu(plain_port, sent)

    assert by_lane.returncode == 0, by_lane.stderr
    assert by_pynetdicom.returncode == 0, by_pynetdicom.stderr
    assert len(receivers.pynetdicom_stores) == len(sent)
    lane_files = lane_spool.instance_files()
    plain_files = plain_spool.instance_files()
    assert [p.name for p in lane_files] == [p.name for p in plain_files]
    assert len(lane_files) == len(sent)
    for ours, theirs in zip(lane_files, plain_files, strict=True):
        assert ours.read_bytes() == theirs.read_bytes()
    originals = {dcmread(p).SOPInstanceUID: dcmread(p) for p in sent}
    for stored in lane_files:
        copy = dcmread(stored)
        assert copy == originals[stored.stem]
        assert copy.file_meta.MediaStorageSOPInstanceUID == stored.stem
    assert echoscu(lane_port).returncode == 0  # pynetdicom's, as before


def _store_request_pdus(
    port: int, caller: str, max_pdu: int
) -> tuple[Association, socket.socket, int, list[bytes]]:
    """An association to `port`, its raw socket and accepted context, and the P-DATA-TF PDUs
    of one C-STORE-RQ (a 4 KiB data set) cut to `max_pdu`: for sending them wrong by hand."""
    ae = AE(ae_title=caller)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = generate_uid()
    request.DataSet = BytesIO(bytes(4096))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = [P_DATA_TF(p).encode() for p in message.encode_msg(context_id, max_pdu)]
    sock: socket.socket = assoc.dul.socket.socket  # type: ignore[union-attr]
    return assoc, sock, context_id, pdus


def _aborted_by_the_node(assoc: Association) -> bool:
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)  # pynetdicom's own thread reads the node's A-ABORT
    closed = not assoc.is_established
    assoc.abort()
    return closed


def test_a_data_set_broken_off_by_another_command_aborts_the_association(
    receivers: _Receivers, caplog: pytest.LogCaptureFixture
) -> None:
    port, spool = receivers.start("lane", 1048576)
    aborted_before = _protocol_aborts()
    assoc, sock, _context, pdus = _store_request_pdus(port, "BREAKER", 1024)
    command, first_data = pdus[:2]

    with caplog.at_level(logging.WARNING, logger="dicomnode"):
        sock.sendall(command + first_data + command)  # a second command inside the data set
        assert _aborted_by_the_node(assoc)

    assert "calling_aet=BREAKER reason=a C-STORE data set interrupted by another message" in (
        caplog.text
    )
    assert _protocol_aborts() == aborted_before + 1  # /metrics: reason="protocol"
    assert spool.instance_files() == []
    assert receivers.pynetdicom_stores == []


def test_a_data_set_in_thousands_of_tiny_fragments_aborts_the_association(
    receivers: _Receivers, caplog: pytest.LogCaptureFixture
) -> None:
    # Each empty fragment would cost the receiver a Python object: 1 MiB of them, ~32 MiB.
    port, spool = receivers.start("lane", 1048576)
    aborted_before = _protocol_aborts()
    assoc, sock, context_id, pdus = _store_request_pdus(port, "CRUMBS", 16384)
    crumbs = struct.pack(">LBB", 2, context_id, 0x00) * 1000  # data, not the last fragment

    with caplog.at_level(logging.WARNING, logger="dicomnode"):
        sock.sendall(pdus[0] + struct.pack(">BBL", 0x04, 0, len(crumbs)) + crumbs)
        assert _aborted_by_the_node(assoc)

    assert "reason=a P-DATA-TF of more than 256 presentation data values" in caplog.text
    assert _protocol_aborts() == aborted_before + 1
    assert spool.instance_files() == []
    assert echoscu(port).returncode == 0


@pytest.mark.parametrize("sent", ["CT\x00", "C\x00T", " CT\x01", "C\u00e9T"])
def test_a_modality_padded_with_nul_is_filed_as_the_modality(
    receivers: _Receivers, tmp_path: Path, sent: str
) -> None:
    # PostgreSQL refuses text with NUL: unstripped, every instance of such a device got 0xA700.
    [path] = write_ct_series(tmp_path / "series", 1, size=64)
    source = dcmread(path)
    source.Modality = sent
    source.save_as(path)
    port, _spool = receivers.start("lane", 1048576)

    assert storescu(port, [path]).returncode == 0

    db = open_database(f"sqlite:///{receivers.root / 'lane' / 'node.db'}")
    with db.engine.connect() as connection:
        modalities = connection.execute(text("SELECT modality FROM series")).scalars().all()
    assert modalities == ["CT"]


@pytest.mark.parametrize("by_lane", [True, False], ids=["lane", "pynetdicom"])
def test_a_store_slower_than_the_network_timeout_does_not_abort_the_association(
    receivers: _Receivers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_lane: bool
) -> None:
    """The caller waits for our answer while we store: the association is not idle. A store
    that outlasts network.network_timeout (here the database busy for 4 s, within its busy
    timeout) is answered, and the caller's next instance is taken on the same association."""
    if not by_lane:
        monkeypatch.setattr(guard, "pynetdicom_supports_lane", lambda _assoc: False)
    sent = write_ct_series(tmp_path / "series", 2, size=64)
    port, spool = receivers.start("slow", 1048576, NetworkSettings(network_timeout=2))
    assert storescu(port, sent[:1]).returncode == 0  # the database exists, in WAL mode
    busy = sqlite3.connect(
        receivers.database("slow"), isolation_level=None, check_same_thread=False
    )
    busy.execute("BEGIN IMMEDIATE")
    release = threading.Timer(4, busy.rollback)
    release.start()
    try:
        started = time.monotonic()
        result = storescu(port, sent[1:] + sent[:1])  # two instances, one association
        waited = time.monotonic() - started
    finally:
        release.join()
        busy.close()
    assert waited > 3, "the database was not busy: the test proves nothing"
    assert result.returncode == 0, result.stderr
    assert len(spool.instance_files()) == 2


def test_every_association_that_ends_without_release_gets_a_line_that_says_why(
    receivers: _Receivers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    [instance] = write_ct_series(tmp_path / "series", 1, size=64)
    port, _spool = receivers.start("ends", 1048576, NetworkSettings(network_timeout=2))

    def associate(caller: str) -> Association:
        ae = AE(ae_title=caller)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # as the file is
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
        assert assoc.is_established
        return assoc

    def ending(caller: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [
                r.getMessage() for r in caplog.records if f"calling_aet={caller}" in r.getMessage()
            ]
            if lines:
                return lines[-1]
            time.sleep(0.05)
        return ""

    with caplog.at_level(logging.INFO, logger="dicomnode.receive.scp"):
        released = associate("RELEASES")
        assert released.send_c_store(instance).Status == 0x0000
        released.release()
        aborted = associate("ABORTS")
        assert aborted.send_c_store(instance).Status == 0x0000
        aborted.abort()
        dropped = associate("DROPS")
        assert dropped.send_c_store(instance).Status == 0x0000
        dropped.dul.socket.socket.close()  # type: ignore[union-attr]  # no A-ABORT: gone
        silent = associate("SILENT")

        assert ending("RELEASES").startswith("association closed calling_aet=RELEASES")
        assert ending("ABORTS").endswith(
            "calling_aet=ABORTS reason=aborted by the peer or the connection was lost stored=1"
        )
        assert ending("DROPS").endswith(
            "calling_aet=DROPS reason=aborted by the peer or the connection was lost stored=1"
        )
        assert ending("SILENT").endswith(
            "calling_aet=SILENT reason=idle for network.network_timeout=2s stored=0"
        )
    silent.abort()
    dropped.abort()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert not any("RELEASES" in r.getMessage() for r in warned)
