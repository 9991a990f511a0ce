"""C-STORE requests taken off the wire without pynetdicom's per-message machinery.

For every message pynetdicom decodes each PDU into items and a primitive, runs it through its
state machine, passes it to a second thread through a queue, decodes the command set, fires its
events, then encodes the response and queues it back to the first thread to send: 2.4 ms of CPU
per 512x512 CT instance with one sender and 5.2 ms with four (their threads share one
interpreter lock) before our handler runs, more than Orthanc spends on the whole store.

The lane takes the P-DATA-TF PDUs of a C-STORE request on an established association, in the
thread that read them (`receive/guard.py`), gives the data set to the same store as pynetdicom's
handler (`StorageReceiver.store`) and sends the C-STORE response itself (`dicom/wire.py`,
byte for byte what pynetdicom sends). Everything else is left to pynetdicom, untouched:
association negotiation, C-ECHO, Storage Commitment, release and abort, a command set split over
several PDUs, a command or UID the lane does not recognise. Once the lane has taken a request's
command, a P-DATA-TF that does not continue that request's data set is a protocol error
(PS3.8 9.3.5, PS3.7 8.1) and the association is aborted, as pynetdicom would.

pynetdicom's per-message events (EVT_C_STORE, EVT_DIMSE_RECV and _SENT, EVT_PDU_RECV and _SENT)
do not fire for the lane's messages: the receiver's handlers are called directly.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.association import Association

from dicomnode.dicom.wire import (
    C_STORE_RQ,
    NO_DATA_SET,
    Fragment,
    TooManyFragments,
    c_store_response,
    command_elements,
    command_pdus,
    fragments,
)
from dicomnode.errors import SpoolError
from dicomnode.spool import validate_uid

_ESTABLISHED = "Sta6"  # pynetdicom's state for an established association


class ProtocolViolation(Exception):
    """A P-DATA-TF that breaks off a C-STORE request the lane has started: abort."""


@dataclass(frozen=True)
class Arrival:
    """One C-STORE request as the store needs it, from pynetdicom's event or from the lane."""

    assoc: Association
    sop_class_uid: str  # the command's Affected SOP Class UID
    sop_instance_uid: str  # the command's Affected SOP Instance UID
    abstract_syntax: str  # the presentation context's SOP class
    transfer_syntax: UID  # the presentation context's
    data_set: bytes  # exactly as received


Store = Callable[[Arrival], "Dataset | int"]


@dataclass
class _Request:
    """A C-STORE request whose command the lane has taken; its data set still arriving."""

    context_id: int
    transfer_syntax: UID
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    data_set: bytearray = field(default_factory=bytearray)  # copied out of each PDU as it comes


def pynetdicom_supports_lane(assoc: Association) -> bool:
    """The lane reads three of pynetdicom's internals; a release without them gets no lane."""
    dul, dimse = assoc.dul, assoc.dimse
    return (
        hasattr(dul, "_idle_timer")
        and hasattr(getattr(dul, "state_machine", None), "current_state")
        and hasattr(dimse, "message")
    )


class StoreLane:
    """One association's C-STORE requests, taken whole by the thread that reads its PDUs."""

    def __init__(self, assoc: Association, store: Store) -> None:
        self._assoc = assoc
        self._store = store
        self._request: _Request | None = None
        # The accepted contexts by ID, taken once the association is established (they never
        # change after): pynetdicom's `accepted_contexts` sorts all of them on every call.
        self._contexts: dict[int | None, tuple[str, UID]] | None = None

    def offer(self, body: bytearray, send: Callable[[bytes], None]) -> bool:
        """Take a P-DATA-TF body if it belongs to a C-STORE request; answer a complete one
        with `send`. False: pynetdicom's to handle. ProtocolViolation: abort."""
        try:
            pdvs = fragments(body)
        except TooManyFragments as exc:
            raise ProtocolViolation(str(exc)) from exc
        if self._request is None:
            if pdvs is None or not self._start(pdvs):
                return False
        elif pdvs is None:
            raise ProtocolViolation("a P-DATA-TF whose items do not add up, within a C-STORE")
        else:
            self._continue(pdvs)
        if not pdvs[-1].is_command and pdvs[-1].is_last:  # the data set is complete
            self._answer(send)
        return True

    @property
    def receiving(self) -> str | None:
        """The SOP Instance UID of the request whose data set is arriving (for log lines)."""
        return self._request.sop_instance_uid if self._request is not None else None

    def abandon(self) -> None:
        """The association is released or aborted mid-request: forget its partial data set."""
        self._request = None

    def _start(self, pdvs: list[Fragment]) -> bool:
        """Take the request if this PDU holds a C-STORE-RQ's whole command set (and perhaps
        the start of its data set); leave anything else to pynetdicom."""
        if (
            self._assoc.dul.state_machine.current_state != _ESTABLISHED
            or self._assoc.dimse.message is not None  # pynetdicom is assembling a message
        ):
            return False
        count = next((i for i, pdv in enumerate(pdvs) if not pdv.is_command), len(pdvs))
        commands, data = pdvs[:count], pdvs[count:]  # command fragments first, then data
        context_id = pdvs[0].context_id
        if (
            not commands
            or any(pdv.is_command for pdv in data)
            or not commands[-1].is_last
            or any(pdv.is_last for pdv in commands[:-1])
            or any(pdv.context_id != context_id for pdv in pdvs)
            or any(pdv.is_last for pdv in data[:-1])
        ):
            return False
        request = self._request_for(context_id, b"".join(pdv.value for pdv in commands))
        if request is None:
            return False
        for pdv in data:
            request.data_set += pdv.value
        self._request = request
        return True

    def _request_for(self, context_id: int, command_set: bytes) -> _Request | None:
        """The request, if the command set is a C-STORE-RQ with a data set on an accepted
        context of its SOP class, with valid UIDs; None for anything else (pynetdicom's)."""
        if self._contexts is None:
            self._contexts = {
                c.context_id: (str(c.abstract_syntax), UID(c.transfer_syntax[0]))
                for c in self._assoc.accepted_contexts
            }
        context = self._contexts.get(context_id)
        fields = command_elements(command_set)
        if context is None or fields is None:
            return None
        abstract_syntax, transfer_syntax = context
        if (
            _us(fields.get(0x0100)) != C_STORE_RQ  # Command Field
            or _us(fields.get(0x0800)) in (None, NO_DATA_SET)  # Command Data Set Type
            or (message_id := _us(fields.get(0x0110))) is None  # Message ID
        ):
            return None
        try:
            sop_class = validate_uid(_text(fields.get(0x0002)), "AffectedSOPClassUID")
            sop_instance = validate_uid(_text(fields.get(0x1000)), "AffectedSOPInstanceUID")
        except (SpoolError, UnicodeDecodeError):
            return None
        if sop_class != abstract_syntax:
            return None
        return _Request(context_id, transfer_syntax, message_id, sop_class, sop_instance)

    def _continue(self, pdvs: list[Fragment]) -> None:
        request = self._request
        assert request is not None
        for index, pdv in enumerate(pdvs):
            if pdv.is_command or pdv.context_id != request.context_id:
                raise ProtocolViolation(
                    "a C-STORE data set interrupted by another message "
                    f"(presentation context {pdv.context_id}, PS3.7 8.1)"
                )
            if pdv.is_last and index != len(pdvs) - 1:
                raise ProtocolViolation("P-DATA after the last fragment of a C-STORE data set")
        for pdv in pdvs:
            request.data_set += pdv.value

    def _answer(self, send: Callable[[bytes], None]) -> None:
        request = self._request
        assert request is not None
        self._request = None
        # bytes, which the header reader shares without a copy; the buffer goes at once, so an
        # instance is held twice only for this moment (README: the memory a receiver needs)
        data_set, request.data_set = bytes(request.data_set), bytearray()
        outcome = self._store(
            Arrival(
                assoc=self._assoc,
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
                abstract_syntax=request.sop_class_uid,  # the lane takes only the context's
                transfer_syntax=request.transfer_syntax,
                data_set=data_set,
            )
        )
        status, comment = (
            (outcome.Status, outcome.get("ErrorComment"))
            if isinstance(outcome, Dataset)
            else (outcome, None)
        )
        response = c_store_response(
            request.message_id, request.sop_class_uid, request.sop_instance_uid, status, comment
        )
        maximum = self._assoc.dimse.maximum_pdu_size  # the peer's maximum PDU length
        for pdu in command_pdus(request.context_id, response, maximum):
            send(pdu)


def _us(value: bytes | None) -> int | None:
    """An unsigned short of a command set, None when absent or not two bytes."""
    return int.from_bytes(value, "little") if value is not None and len(value) == 2 else None


def _text(value: bytes | None) -> str:
    """A UID of a command set without its padding (a NUL; a space from some senders)."""
    return (value or b"").rstrip(b"\x00 ").decode("ascii")
