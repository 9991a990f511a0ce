"""The send lane's writing (forward/send_lane.py `_write`) over a real socket pair: the bytes
are pynetdicom's for the same request sent from a file, whatever the data set's length against
the batch and the PDU size, and a message broken off after its first bytes aborts the
association. The whole lane against real peers: tests/integration/test_send_lane.py."""

import io
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from dicomnode.db.records import SpooledInstance
from dicomnode.dicom.waking import WakingSocket
from dicomnode.dicom.wire import PDU_OVERHEAD, c_store_request
from dicomnode.errors import ForwardError
from dicomnode.forward import send_lane

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.123456789"
ITEM = SpooledInstance(SOP, CT, "1.2.840.10008.1.2.1", Path("unused.dcm"))


class Lane:
    """`_write`'s view of an association: a transport over one end of a socket pair, the peer's
    maximum PDU length, and a record of aborts; the other end is read by a thread."""

    def __init__(self, limit: int) -> None:
        ours, self._theirs = socket.socketpair()
        transport = object.__new__(WakingSocket)  # no pynetdicom association behind it
        transport.socket = ours
        transport.sending = threading.Lock()
        self.aborts = 0
        self.assoc = SimpleNamespace(
            dul=SimpleNamespace(socket=transport),
            dimse=SimpleNamespace(maximum_pdu_size=limit),
            abort=self._abort,
        )
        self._received = bytearray()
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _abort(self) -> None:
        self.aborts += 1

    def _read(self) -> None:
        while chunk := self._theirs.recv(1 << 20):
            self._received += chunk

    def received(self) -> bytes:
        """Everything written, once our end is closed."""
        self.assoc.dul.socket.socket.close()
        self._reader.join(timeout=30)
        self._theirs.close()
        return bytes(self._received)

    def write(self, file: Any, length: int) -> None:
        command = c_store_request(7, CT, SOP)
        send_lane._write(self.assoc, 1, command, file, length, ITEM)  # type: ignore[arg-type]


def pynetdicoms(path: Path, limit: int) -> bytes:
    """What pynetdicom's send_c_store writes for the same request, its data set read from
    `path` (from offset 0), at the peer's maximum PDU length `limit`."""
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = SOP
    request.Priority = 2
    request._dataset_path = (path, 0)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return b"".join(P_DATA_TF(pdata).encode() for pdata in message.encode_msg(1, limit))


def batch_for(limit: int) -> int:
    room = limit - PDU_OVERHEAD
    return send_lane.BATCH_BYTES // room * room


@pytest.mark.parametrize("limit", [64, 16384, 262144])  # tiny, Orthanc's and DCMTK's, the cap
@pytest.mark.parametrize("length", ["empty", "one", "batch", "batch+1", "2 batches+5"])
def test_the_lanes_bytes_are_pynetdicoms_sending_the_same_file(
    tmp_path: Path, limit: int, length: str
) -> None:
    batch = batch_for(limit)
    size = {
        "empty": 0,
        "one": 1,
        "batch": batch,
        "batch+1": batch + 1,
        "2 batches+5": 2 * batch + 5,
    }
    data = bytes(range(251)) * (size[length] // 251) + bytes(size[length] % 251)
    path = tmp_path / "data-set"
    path.write_bytes(data)
    lane = Lane(limit)

    with open(path, "rb") as file:
        lane.write(file, len(data))

    assert lane.received() == pynetdicoms(path, limit)
    assert lane.aborts == 0


class _Breaking(io.BytesIO):
    """A data set whose second read fails, or closes the connection first (a peer's abort,
    as pynetdicom's DUL thread closes it), as `how` says."""

    def __init__(self, data: bytes, how: str, lane: Lane) -> None:
        super().__init__(data)
        self._how, self._lane, self._reads = how, lane, 0

    def read(self, size: int | None = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            if self._how == "disk":
                raise OSError(5, "Input/output error")
            self._lane.assoc.dul.socket.socket = None
        return super().read(size)


def test_a_file_that_fails_before_anything_went_out_sends_nothing_and_aborts_nothing() -> None:
    lane = Lane(16384)

    class Unreadable(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        lane.write(Unreadable(b"x" * 1000), 1000)

    assert lane.received() == b""
    assert lane.aborts == 0


@pytest.mark.parametrize("how", ["disk", "peer"])
def test_a_message_broken_off_after_its_first_batch_aborts_the_association(how: str) -> None:
    lane = Lane(16384)
    length = 2 * batch_for(16384)
    transport_socket = lane.assoc.dul.socket.socket

    if how == "disk":
        with pytest.raises(OSError, match="Input/output error"):
            lane.write(_Breaking(bytes(length), how, lane), length)
    else:
        with pytest.raises(ForwardError, match="association aborted") as caught:
            lane.write(_Breaking(bytes(length), how, lane), length)
        assert caught.value.transient and SOP in str(caught.value)
        lane.assoc.dul.socket.socket = transport_socket  # for received() to close

    assert lane.aborts == 1
    assert 0 < len(lane.received()) < length  # the first batch went out, not the rest
