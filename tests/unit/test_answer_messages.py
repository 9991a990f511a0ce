"""When a peer's message ends (`dicom/wire.messages_ended`): where pynetdicom's decoder ends
it, so that the byte budget of a destination's answer restarts there and nowhere else, and the
time a caller's message takes stops counting there."""

import struct
from io import BytesIO

from pynetdicom.dimse_messages import C_STORE_RSP, N_EVENT_REPORT_RQ
from pynetdicom.dimse_primitives import C_STORE, N_EVENT_REPORT

from dicomnode.dicom.wire import command_has_no_data_set, messages_ended

FOLLOWS, NONE = 0x0000, 0x0101  # CommandDataSetType: a data set follows, none does


def _command(data_set_type: int) -> bytes:
    """A command set's tail as the Implicit VR Little Endian encoding has it."""
    status = struct.pack("<HHLH", 0x0000, 0x0100, 2, 0x8001)  # CommandField
    return status + struct.pack("<HHLH", 0x0000, 0x0800, 2, data_set_type)


def _body(*values: tuple[int, bytes]) -> bytearray:
    """A P-DATA-TF body of PDVs, each (message control header, fragment)."""
    return bytearray(
        b"".join(struct.pack(">LBB", len(data) + 2, 1, control) + data for control, data in values)
    )


def test_a_response_ends_at_its_command_and_a_report_at_its_data_set() -> None:
    assert messages_ended(bytearray(), _body((0x03, _command(NONE)))) == (True, bytearray())
    ended, open_command = messages_ended(bytearray(), _body((0x03, _command(FOLLOWS))))
    assert not ended and open_command == _command(FOLLOWS)
    assert not messages_ended(open_command, _body((0x00, bytes(100))))[0]
    assert messages_ended(open_command, _body((0x02, bytes(100)))) == (True, bytearray())


def test_a_command_fragment_in_every_pdu_does_not_end_a_message_with_data_to_come() -> None:
    """The reviewer's bypass: a data fragment and an empty last command fragment per PDU."""
    command = bytearray()
    ended, command = messages_ended(command, _body((0x03, _command(FOLLOWS))))
    for _ in range(100):
        ended, command = messages_ended(command, _body((0x00, bytes(1000)), (0x03, b"")))
        assert not ended


def test_a_command_set_in_two_fragments_is_read_whole() -> None:
    whole = _command(NONE)
    ended, command = messages_ended(bytearray(), _body((0x01, whole[:5])))
    assert not ended
    assert messages_ended(command, _body((0x03, whole[5:])))[0]


def test_pynetdicoms_own_encodings_are_read_as_it_reads_them() -> None:
    response = C_STORE()
    response.MessageIDBeingRespondedTo, response.Status = 1, 0x0000
    response.AffectedSOPClassUID = response.AffectedSOPInstanceUID = "1.2.3"
    report = N_EVENT_REPORT()
    report.MessageID, report.EventTypeID = 2, 1
    report.AffectedSOPClassUID = report.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    report.EventInformation = BytesIO(bytes(40_000))  # its data set: several PDUs at 16 KB
    for primitive, kind in ((response, C_STORE_RSP), (report, N_EVENT_REPORT_RQ)):
        message = kind()
        message.primitive_to_message(primitive)
        bodies = [
            bytearray(
                b"".join(
                    struct.pack(">LB", len(data) + 1, context) + data
                    for context, data in p_data.presentation_data_value_list
                )
            )
            for p_data in message.encode_msg(1, 16382)
        ]
        command, ends = bytearray(), []
        for body in bodies:
            ended, command = messages_ended(command, body)
            ends.append(ended)
        assert ends == [False] * (len(bodies) - 1) + [True], kind.__name__


def test_a_command_set_without_its_data_set_type_is_not_taken_to_end() -> None:
    assert not command_has_no_data_set(b"")
    assert not command_has_no_data_set(_command(FOLLOWS))
    assert command_has_no_data_set(_command(NONE))
