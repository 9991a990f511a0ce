"""Our own encoders (dicom/wire.py) write exactly what pynetdicom writes for the same values."""

from io import BytesIO

import pytest
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.pdu import P_DATA_TF

from dicomnode.dicom.wire import (
    PDU_OVERHEAD,
    c_store_request,
    c_store_response,
    command_pdus,
    data_set_pdu,
    part10_header,
)

CT = "1.2.840.10008.5.1.4.1.1.2"  # 25 characters: padded
MR = "1.2.840.10008.5.1.4.1.1.4"
EVEN_UID = "1.2.826.0.1.3680043.8.498.1234567890"  # 36 characters: not padded
ODD_UID = "1.2.826.0.1.3680043.8.498.123456789"
SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"]


@pytest.mark.parametrize("sop_instance_uid", [EVEN_UID, ODD_UID])
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_the_file_header_is_pynetdicoms(sop_instance_uid: str, syntax: str) -> None:
    meta = create_file_meta(
        sop_class_uid=UID(CT), sop_instance_uid=UID(sop_instance_uid), transfer_syntax=UID(syntax)
    )
    expected = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
    assert part10_header(CT, sop_instance_uid, syntax) == expected


def _pynetdicom_response(
    context_id: int,
    max_pdu: int,
    message_id: int,
    sop_class: str,
    sop_instance: str,
    status: int,
    comment: str | None,
) -> list[bytes]:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = sop_class
    response.AffectedSOPInstanceUID = sop_instance
    response.Status = status
    response.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    return [P_DATA_TF(pdata).encode() for pdata in message.encode_msg(context_id, max_pdu)]


@pytest.mark.parametrize(
    ("status", "comment"),
    [
        (0x0000, None),
        (0xA700, "less than node.min_free_disk_mb=500 MB free in (path)"),
        (0xC000, "odd"),
    ],
)
@pytest.mark.parametrize("sop_class", [CT, MR])
@pytest.mark.parametrize("sop_instance", [EVEN_UID, ODD_UID])
@pytest.mark.parametrize("max_pdu", [0, 16384, 64])  # 64: the command set in fragments
def test_the_c_store_response_is_pynetdicoms(
    status: int, comment: str | None, sop_class: str, sop_instance: str, max_pdu: int
) -> None:
    ours = command_pdus(
        3, c_store_response(65535, sop_class, sop_instance, status, comment), max_pdu
    )
    theirs = _pynetdicom_response(3, max_pdu, 65535, sop_class, sop_instance, status, comment)
    assert ours == theirs
    if max_pdu == 64:
        assert len(ours) > 1


def _pynetdicom_request(
    context_id: int, max_pdu: int, message_id: int, sop_class: str, sop_instance: str, data: bytes
) -> list[bytes]:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance
    request.Priority = 2  # what send_c_store sends unless told otherwise
    request.DataSet = BytesIO(data)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return [P_DATA_TF(pdata).encode() for pdata in message.encode_msg(context_id, max_pdu)]


def _ours(
    context_id: int, max_pdu: int, message_id: int, sop_class: str, sop_instance: str, data: bytes
) -> list[bytes]:
    """As forward/send_lane.py frames a request: the command set, then the data set in
    fragments of the room a PDU leaves."""
    command = c_store_request(message_id, sop_class, sop_instance)
    pdus = command_pdus(context_id, command, max_pdu)
    room = max_pdu - PDU_OVERHEAD
    for start in range(0, len(data), room):
        last = start + room >= len(data)
        pdus.append(data_set_pdu(context_id, memoryview(data)[start : start + room], last))
    return pdus


@pytest.mark.parametrize("sop_class", [CT, MR])
@pytest.mark.parametrize("sop_instance", [EVEN_UID, ODD_UID])
@pytest.mark.parametrize("max_pdu", [16384, 262144, 64])  # Orthanc's, the lane's cap, tiny
@pytest.mark.parametrize("size", [1, 16378, 16379, 100_000])  # one, exactly one, and many PDUs
def test_the_c_store_request_is_pynetdicoms(
    sop_class: str, sop_instance: str, max_pdu: int, size: int
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ours = _ours(7, max_pdu, 65535, sop_class, sop_instance, data)
    theirs = _pynetdicom_request(7, max_pdu, 65535, sop_class, sop_instance, data)
    assert ours == theirs
    assert len(ours) >= 2
