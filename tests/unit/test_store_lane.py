"""Which PDUs the store lane takes, what it answers, and what it leaves to pynetdicom.

The association is a stand-in holding the few things the lane reads of pynetdicom's; the
PDUs are what pynetdicom itself encodes for a C-STORE request (the network side is in
tests/integration/test_store_lane.py).
"""

from dataclasses import dataclass, field
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.presentation import PresentationContext

from dicomnode.dicom.wire import c_store_response, command_elements, command_pdus
from dicomnode.receive.status import status_dataset
from dicomnode.receive.store_lane import Arrival, ProtocolViolation, StoreLane

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SOP = "1.2.826.0.1.3680043.8.498.42"
CONTEXT_ID = 1


def _association(state: str = "Sta6", partial_message: object = None) -> Any:
    context = PresentationContext()
    context.context_id = CONTEXT_ID
    context.abstract_syntax = CT
    context.transfer_syntax = [EXPLICIT_LE]
    return SimpleNamespace(
        accepted_contexts=[context],
        dul=SimpleNamespace(state_machine=SimpleNamespace(current_state=state)),
        dimse=SimpleNamespace(message=partial_message, maximum_pdu_size=16384),
    )


@dataclass
class _Store:
    outcome: Dataset | int = 0x0000
    arrivals: list[Arrival] = field(default_factory=list)

    def __call__(self, arrival: Arrival) -> Dataset | int:
        self.arrivals.append(arrival)
        return self.outcome


def _bodies(data_set: bytes, *, max_pdu: int, sop_class: str = CT, sop: str = SOP) -> list[bytes]:
    """The P-DATA-TF bodies pynetdicom sends for a C-STORE request with this data set."""
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop
    request.DataSet = BytesIO(data_set)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return [P_DATA_TF(p).encode()[6:] for p in message.encode_msg(CONTEXT_ID, max_pdu)]


def _offer_all(lane: StoreLane, bodies: list[bytes]) -> tuple[list[bool], list[bytes]]:
    sent: list[bytes] = []
    taken = [lane.offer(bytearray(body), sent.append) for body in bodies]
    return taken, sent


@pytest.mark.parametrize(
    ("max_pdu", "one_pdu"),
    [(0, False), (1024, False), (0, True)],  # the data set in one PDU, in many, with the command
)
def test_a_c_store_request_is_taken_stored_once_and_answered(max_pdu: int, one_pdu: bool) -> None:
    data_set = bytes(range(256)) * 20
    store = _Store()
    lane = StoreLane(_association(), store)
    bodies = _bodies(data_set, max_pdu=max_pdu)

    taken, sent = _offer_all(lane, [b"".join(bodies)] if one_pdu else bodies)

    assert all(taken)
    assert len(store.arrivals) == 1
    arrival = store.arrivals[0]
    assert (arrival.sop_class_uid, arrival.sop_instance_uid) == (CT, SOP)
    assert arrival.transfer_syntax == UID(EXPLICIT_LE)
    assert arrival.data_set == data_set
    assert sent == command_pdus(CONTEXT_ID, c_store_response(7, CT, SOP, 0x0000), 16384)


def test_a_refusal_is_answered_with_its_status_and_comment() -> None:
    store = _Store(outcome=status_dataset(0xA700, "less than node.min_free_disk_mb=1 MB free"))
    lane = StoreLane(_association(), store)

    _, sent = _offer_all(lane, _bodies(b"\x08\x00" * 10, max_pdu=0))

    answer = b"".join(sent)
    fields = command_elements(answer[12:])  # after the PDU and PDV headers
    assert fields is not None
    assert int.from_bytes(fields[0x0900], "little") == 0xA700
    assert fields[0x0902].rstrip() == b"less than node.min_free_disk_mb=1 MB free"


def test_a_c_echo_is_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(echo)
    body = P_DATA_TF(next(message.encode_msg(CONTEXT_ID, 0))).encode()[6:]

    assert StoreLane(_association(), _Store()).offer(bytearray(body), [].append) is False


@pytest.mark.parametrize(
    ("association", "sop_class", "sop"),
    [
        (_association(), MR, SOP),  # another SOP class than the context's
        (_association(), CT, "1.2.3/../../escape"),  # not a UID: pynetdicom answers as before
        (_association(state="Sta13"), CT, SOP),  # not established
        (_association(partial_message=object()), CT, SOP),  # pynetdicom mid-message
    ],
)
def test_requests_the_lane_does_not_recognise_are_left_to_pynetdicom(
    association: Any, sop_class: str, sop: str
) -> None:
    store = _Store()
    body = _bodies(b"\x08\x00" * 10, max_pdu=0, sop_class=sop_class, sop=sop)[0]

    assert StoreLane(association, store).offer(bytearray(body), [].append) is False
    assert store.arrivals == []


def test_a_command_set_split_over_pdus_is_left_to_pynetdicom() -> None:
    first = _bodies(b"\x08\x00" * 10, max_pdu=40)[0]  # the command's first fragment only
    assert StoreLane(_association(), _Store()).offer(bytearray(first), [].append) is False


def test_a_data_set_broken_off_by_another_command_is_a_protocol_violation() -> None:
    store = _Store()
    lane = StoreLane(_association(), store)
    command, first_data = _bodies(bytes(4000), max_pdu=1024)[:2]
    assert lane.offer(bytearray(command), [].append)
    assert lane.offer(bytearray(first_data), [].append)

    with pytest.raises(ProtocolViolation, match="interrupted by another message"):
        lane.offer(bytearray(command), [].append)
    assert store.arrivals == []


def test_an_abandoned_request_leaves_the_next_one_whole() -> None:
    store = _Store()
    lane = StoreLane(_association(), store)
    assert lane.offer(bytearray(_bodies(bytes(4000), max_pdu=1024)[0]), [].append)
    lane.abandon()  # e.g. the peer aborted

    taken, _ = _offer_all(lane, _bodies(b"\x01\x02" * 8, max_pdu=0))

    assert all(taken)
    assert [a.data_set for a in store.arrivals] == [b"\x01\x02" * 8]
