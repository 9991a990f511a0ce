"""The small structures read and written for every instance received or forwarded, done directly.

pynetdicom and pydicom build them from datasets whose every element is validated as it is set:
~0.2 ms for a file meta header and ~0.1 ms for a C-STORE response, per instance, under the
interpreter lock that all associations of a process share; that alone is a few percent of the
node's ingest rate with four senders. On the forward side pynetdicom also hands each P-DATA
fragment to the DUL thread as an object of its own. These structures are fixed by the standard
and small, so they are written here with `struct`: the receive path's file meta header and
C-STORE response (`receive/store_lane.py`), the forward's C-STORE request and the P-DATA-TF
PDUs that carry a data set (`forward/send_lane.py`). `tests/unit/test_wire.py` pins every byte
to what pynetdicom writes for the same values (UIDs of odd and even length, a status with and
without an error comment, a peer whose maximum PDU length forces fragments). A C-STORE
request's command set is read the same way (the store lane validates what it uses of it).
"""

import struct
from dataclasses import dataclass

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\x00" * 128 + b"DICM"  # PS3.10 7.1
_SHORT = struct.Struct("<HH2sH")  # explicit VR: group, element, VR, 16-bit length
_IMPLICIT = struct.Struct("<HHL")  # implicit VR: group, element, 32-bit length
_US = struct.Struct("<H")
PDU_HEADER = struct.Struct(">BBL")  # PS3.8 9.3.1: type, reserved, length
P_DATA_TF = 0x04
# PS3.8 9.3.5.1 and Annex E.2: each presentation data value item is its length, the
# presentation context ID and a message control header (bit 0: command, bit 1: last fragment).
_PDV_HEADER = struct.Struct(">LBB")
# What a PDV item adds to its fragment within the maximum length a peer takes (PS3.8 9.3.1:
# the length of a P-DATA-TF's items): the item's length field and its two header bytes.
PDU_OVERHEAD = _PDV_HEADER.size
_COMMAND = 0x01
_LAST = 0x02
C_STORE_RQ = 0x0001  # CommandField (PS3.7 9.3.1.1)
C_STORE_RSP = 0x8001  # CommandField (PS3.7 9.3.1.2)
NO_DATA_SET = 0x0101  # CommandDataSetType (PS3.7 E.1)
DATA_SET = 0x0001  # any other value says a data set follows; pynetdicom and DCMTK send this one
PRIORITY_LOW = 0x0002  # Priority (PS3.7 9.1.1.1.6): pynetdicom's default for a C-STORE


# Senders put one or two presentation data values in a P-DATA-TF; a PDU of thousands of tiny
# ones costs a Python object each to read, so past this many the association is refused.
MAX_FRAGMENTS = 256
# More of a command set than any command holds (a few hundred bytes): what is kept to read it.
COMMAND_SET_LIMIT = 64 << 10


class TooManyFragments(ValueError):
    """A P-DATA-TF of more than MAX_FRAGMENTS presentation data values."""


@dataclass(frozen=True)
class Fragment:
    """One presentation data value of a P-DATA-TF: a piece of a command set or data set."""

    context_id: int
    is_command: bool
    is_last: bool
    value: memoryview


def pdv_problem(body: bytearray) -> str | None:
    """What makes a P-DATA-TF's body other than PDV items that fill it exactly (PS3.8 9.3.5:
    each a 4-byte length of at least 2, then a context ID, a message control header and the
    fragment); None when it is that. pynetdicom logged a traceback for each such PDU.

    TooManyFragments past MAX_FRAGMENTS items (each costs the reader time)."""
    at = count = 0
    while at < len(body):
        count += 1
        if count > MAX_FRAGMENTS:
            raise TooManyFragments(
                f"a P-DATA-TF of more than {MAX_FRAGMENTS} presentation data values"
            )
        if at + 4 > len(body):
            return f"PDV item at byte {at} is cut short ({len(body) - at} bytes)"
        length = int.from_bytes(body[at : at + 4], "big")
        if length < 2 or at + 4 + length > len(body):
            return (
                f"PDV item at byte {at} declares {length} bytes, "
                f"{len(body) - at - 4} follow in the PDU"
            )
        at += 4 + length
    return None if body else "body holds no PDV item"


def fragments(body: bytearray) -> list[Fragment] | None:
    """The presentation data values of a P-DATA-TF body; None if its items do not add up
    (`pdv_problem`, which raises TooManyFragments past MAX_FRAGMENTS values)."""
    if pdv_problem(body) is not None:
        return None
    view = memoryview(body)
    found: list[Fragment] = []
    offset = 0
    while offset < len(view):
        length, context_id, control = _PDV_HEADER.unpack_from(view, offset)
        end = offset + 4 + length
        value = view[offset + _PDV_HEADER.size : end]
        found.append(Fragment(context_id, bool(control & _COMMAND), bool(control & _LAST), value))
        offset = end
    return found or None


def messages_ended(command: bytearray, body: bytearray) -> tuple[bool, bytearray]:
    """Whether a message of the peer's ends in this P-DATA-TF body, where pynetdicom ends it:
    at the last fragment of its data set, or at the last fragment of a command set that says
    no data set follows (a response's); and the command set of the message still open, to
    carry on with (`command`: what it was before this body). A command's last fragment alone
    does not end a message: a peer that put one in every PDU, data following, would
    otherwise restart the count at each and grow pynetdicom's message without end."""
    ended = False
    for value in fragments(body) or ():
        if not value.is_command:
            if value.is_last:
                ended, command = True, bytearray()
            continue
        if len(command) < COMMAND_SET_LIMIT:
            command += value.value
        if value.is_last and command_has_no_data_set(command):
            ended, command = True, bytearray()
    return ended, command


def command_has_no_data_set(command: bytes | bytearray) -> bool:
    """Whether an encoded command set's CommandDataSetType (0000,0800) is 0x0101, "no data
    set" (PS3.7 E.1); False when it cannot be read."""
    at = 0
    while at + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, at)
        if (group, element) == (0x0000, 0x0800):
            return length == 2 and command[at + 8 : at + 10] == _US.pack(NO_DATA_SET)
        at += 8 + length
    return False


def _padded(text: str, pad: bytes) -> bytes:
    """PS3.5 6.2: values have even length; UI is padded with NUL, text VRs with a space."""
    value = text.encode("ascii")
    return value + pad if len(value) % 2 else value


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, "DICM" and the File Meta Information (PS3.10 7.1) pynetdicom would write for
    a received instance: what goes before its data set in the spooled file."""
    uids = [
        (0x0002, sop_class_uid),  # Media Storage SOP Class UID
        (0x0003, sop_instance_uid),  # Media Storage SOP Instance UID
        (0x0010, transfer_syntax_uid),
        (0x0012, PYNETDICOM_IMPLEMENTATION_UID),
    ]
    version = _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")
    group = b"".join(
        [
            # (0002,0001) File Meta Information Version: OB, so a 32-bit length
            struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            *(
                _SHORT.pack(0x0002, tag, b"UI", len(value)) + value
                for tag, value in ((tag, _padded(uid, b"\x00")) for tag, uid in uids)
            ),
            _SHORT.pack(0x0002, 0x0013, b"SH", len(version)) + version,
        ]
    )
    length = _SHORT.pack(0x0002, 0x0000, b"UL", 4) + struct.pack("<L", len(group))
    return _PREAMBLE + length + group


def c_store_response(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    error_comment: str | None = None,
) -> bytes:
    """The command set of a C-STORE-RSP (PS3.7 9.3.1.2), implicit VR little endian."""
    elements = [
        (0x0002, _padded(sop_class_uid, b"\x00")),  # Affected SOP Class UID
        (0x0100, _US.pack(C_STORE_RSP)),  # Command Field
        (0x0120, _US.pack(message_id)),  # Message ID Being Responded To
        (0x0800, _US.pack(NO_DATA_SET)),  # Command Data Set Type
        (0x0900, _US.pack(status)),
    ]
    if error_comment:
        elements.append((0x0902, _padded(error_comment, b" ")))  # Error Comment, LO
    elements.append((0x1000, _padded(sop_instance_uid, b"\x00")))  # Affected SOP Instance UID
    return _command_set(elements)


def c_store_request(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, priority: int = PRIORITY_LOW
) -> bytes:
    """The command set of a C-STORE-RQ with its data set to follow (PS3.7 9.3.1.1), implicit VR
    little endian; no Move Originator (the node sends on its own behalf)."""
    return _command_set(
        [
            (0x0002, _padded(sop_class_uid, b"\x00")),  # Affected SOP Class UID
            (0x0100, _US.pack(C_STORE_RQ)),  # Command Field
            (0x0110, _US.pack(message_id)),  # Message ID
            (0x0700, _US.pack(priority)),
            (0x0800, _US.pack(DATA_SET)),  # Command Data Set Type
            (0x1000, _padded(sop_instance_uid, b"\x00")),  # Affected SOP Instance UID
        ]
    )


def _command_set(elements: list[tuple[int, bytes]]) -> bytes:
    """Group 0000's elements, in the order given (ascending), after their group length."""
    body = b"".join(_IMPLICIT.pack(0x0000, tag, len(value)) + value for tag, value in elements)
    return _IMPLICIT.pack(0x0000, 0x0000, 4) + struct.pack("<L", len(body)) + body


def command_elements(command_set: bytes) -> dict[int, bytes] | None:
    """A command set's values by element number (group 0000, implicit VR little endian,
    PS3.7 6.3.1); None when its elements do not add up."""
    found = {}
    offset = 0
    while offset < len(command_set):
        if offset + _IMPLICIT.size > len(command_set):
            return None
        group, element, length = _IMPLICIT.unpack_from(command_set, offset)
        offset += _IMPLICIT.size
        if group != 0x0000 or offset + length > len(command_set):
            return None
        found[element] = command_set[offset : offset + length]
        offset += length
    return found


def command_pdus(context_id: int, command_set: bytes, max_pdu_length: int) -> list[bytes]:
    """P-DATA-TF PDUs carrying a command set with no data set, each within the peer's maximum
    PDU length (0: unlimited), as pynetdicom fragments it (PS3.8 9.3.5, Annex E)."""
    room = max_pdu_length - PDU_OVERHEAD if max_pdu_length else len(command_set)
    room = max(room, 1)
    pdus = []
    for start in range(0, len(command_set), room):
        fragment = command_set[start : start + room]
        last = start + room >= len(command_set)
        control = _COMMAND | (_LAST if last else 0)
        item = _PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
        pdus.append(PDU_HEADER.pack(P_DATA_TF, 0, len(item)) + item)
    return pdus


def data_set_pdu(context_id: int, fragment: bytes | memoryview, last: bool) -> bytes:
    """One P-DATA-TF PDU carrying one fragment of a data set (PS3.8 9.3.5, Annex E): the
    caller keeps each within the peer's maximum PDU length, less PDU_OVERHEAD."""
    control = _LAST if last else 0
    item = _PDV_HEADER.pack(len(fragment) + 2, context_id, control)
    return PDU_HEADER.pack(P_DATA_TF, 0, len(item) + len(fragment)) + item + fragment
