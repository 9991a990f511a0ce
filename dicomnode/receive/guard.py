"""What one inbound connection may make the node hold: bytes per PDU, bytes in flight, time.

Each PDU is read whole, within the connection's limits, before pynetdicom sees it
(`dicom/bounded_socket.py`), and the association is aborted (A-ABORT, PS3.8 9.3.8, then the
connection closed; one log line with the address, calling AE and reason) when:

* a P-DATA-TF is longer than the maximum length we advertised (PS3.8 D.3.3.1), or another PDU
  longer than `OTHER_PDU_LIMIT`;
* the P-DATA received since our last response passes the byte budget (`node.max_instance_mb`
  plus room for the command set): a caller that never sends its last fragment, or sends
  messages without waiting for our answers (PS3.7 D.3.3.3: one operation at a time unless
  negotiated), is cut off at the budget instead of filling memory;
* one PDU takes longer than `network.network_timeout` from its first byte to its last, so a
  caller that drips bytes is dropped like a silent one (its A-ASSOCIATE-RQ: `acse_timeout`);
* a message that has taken that long has come slower than 500 bytes/s on average: a caller
  that sends a small PDU now and then held its association's place for as long as it liked;
* a P-DATA-TF's PDV items do not fill it exactly (pynetdicom logged a traceback for each);
* an A-ASSOCIATE-RQ names more than `MAX_CONTEXTS` presentation contexts, `MAX_SYNTAXES`
  transfer syntaxes in one of them or `MAX_USER_ITEMS` user information items: pynetdicom
  decodes and logs each one (a 1 MB request of bogus transfer syntaxes made 264,433 log lines,
  25 MB of Python's warning registry for good, and outlasted acse_timeout);
* an A-ASSOCIATE-RQ's AE titles or UIDs are not what PS3.5 allows (control characters, non-ASCII
  bytes, UIDs over 64 characters): pynetdicom logs a traceback for each such request.
"""

import logging

from pynetdicom.transport import AssociationSocket, RequestHandler

from dicomnode.dicom.bounded_socket import BoundedSocket, ConnectionLimits, Refused
from dicomnode.dicom.wire import P_DATA_TF
from dicomnode.observe.counters import CONNECTIONS_ABORTED
from dicomnode.receive.store_lane import (
    ProtocolViolation,
    Store,
    StoreLane,
    pynetdicom_supports_lane,
)

__all__ = ["COMMAND_ALLOWANCE", "ConnectionLimits", "GuardedRequestHandler", "GuardedSocket"]

log = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: context IDs are the odd numbers 1-255
MAX_SYNTAXES = 64  # transfer syntaxes proposed in one context (DICOM defines fewer)
MAX_SYNTAXES_IN_ALL = 2048  # 128 contexts with 16 each
MAX_USER_ITEMS = 512  # role selections and extended negotiations: one per context, at most
MIN_MAXIMUM_LENGTH = 14  # a PDV item's header (6) and a fragment's command header (2) and more
_FIXED_RQ_FIELDS = 68  # protocol version, reserved, called and calling AE, reserved (PS3.8 9.3.2)
_CALLED_AE, _CALLING_AE = 4, 20  # where the AE titles start in an A-ASSOCIATE-RQ's body
AE_LENGTH = 16
UID_LENGTH = 64
RELATED_SOP_CLASS = "related general SOP class UID"  # may not be empty (the others may)
COMMAND_ALLOWANCE = 1 << 16  # command sets and PDV headers on top of the data set


class GuardedSocket(BoundedSocket):
    """The socket of an association a caller requested: each PDU read whole within the
    listener's limits, its A-ASSOCIATE-RQ checked, its C-STORE requests taken by the lane."""

    lane: StoreLane | None

    @classmethod
    def adopt(
        cls, sock: AssociationSocket, limits: ConnectionLimits, store: Store | None = None
    ) -> "GuardedSocket":
        """Turn the socket pynetdicom made for an association into a guarded one; with
        `store`, its C-STORE requests go by the store lane (receive/store_lane.py).

        pynetdicom's RequestHandler builds its AssociationSocket inline and queues events in
        its constructor, so the instance is re-classed rather than built a second time.
        """
        sock.__class__ = cls
        guarded = sock
        assert isinstance(guarded, GuardedSocket)
        guarded.bound(limits)
        if guarded.socket is not None:  # the backstop of what we send on it
            guarded.socket.settimeout(limits.pdu_seconds)
        lane_fits = store is not None and pynetdicom_supports_lane(guarded.assoc)
        guarded.lane = StoreLane(guarded.assoc, store) if store is not None and lane_fits else None
        return guarded

    def taken(self) -> bool:
        """Offer the PDU just read to the store lane; a broken-off request aborts."""
        header, body = self._header, self._body
        if self.lane is None or header is None or body is None or len(header) < 6:
            return False
        if header[0] != P_DATA_TF:
            self.lane.abandon()  # a release or abort: pynetdicom's, and no request continues
            return False
        try:
            took = self.lane.offer(body, self._send_answer)
        except ProtocolViolation as exc:
            self.refused(Refused(str(exc), "protocol"))
            self._header, self._body = bytearray(), None
            return False
        return took

    def _send_answer(self, pdu: bytes) -> None:
        self.send(pdu)
        self.message_done()  # we answered: the caller's message is over

    def checked(self, pdu_type: int, body: bytearray) -> None:
        if pdu_type == A_ASSOCIATE_RQ:
            _check_request_items(body)
            _check_request_text(body)

    def refused(self, error: Refused) -> None:
        """Count it, say who and why in one log line, then abort."""
        CONNECTIONS_ABORTED.labels(error.kind).inc()
        requestor = self.assoc.requestor
        receiving = self.lane.receiving if self.lane is not None else None
        log.warning(
            "association aborted address=%s calling_aet=%s reason=%s%s",
            _address(self),
            requestor.ae_title or "-",
            error,
            f" while receiving sop={receiving}" if receiving else "",
        )
        super().refused(error)


def _items(data: bytes | bytearray, start: int) -> list[tuple[int, int, int]]:
    """The (type, value start, value end) of each item from `start` on (PS3.8 9.3.2: a type,
    a reserved byte, a 2-byte length); what does not parse is pynetdicom's to refuse."""
    items = []
    while start + 4 <= len(data):
        kind, length = data[start], int.from_bytes(data[start + 2 : start + 4], "big")
        items.append((kind, start + 4, min(start + 4 + length, len(data))))
        start += 4 + length
    return items


def _check_request_items(body: bytearray) -> None:
    """Refused for an A-ASSOCIATE-RQ that names more than a caller could need."""
    items = _items(body, _FIXED_RQ_FIELDS)
    contexts = [item for item in items if item[0] == 0x20]
    if len(contexts) > MAX_CONTEXTS:
        raise Refused(
            f"an A-ASSOCIATE-RQ of {len(contexts)} presentation contexts (at most {MAX_CONTEXTS})",
            "protocol",
        )
    in_all = 0
    for _, begin, end in contexts:
        syntaxes = sum(kind == 0x40 for kind, _, _ in _items(body[begin:end], 4))
        in_all += syntaxes
        if syntaxes > MAX_SYNTAXES or in_all > MAX_SYNTAXES_IN_ALL:
            raise Refused(
                f"an A-ASSOCIATE-RQ proposing {syntaxes} transfer syntaxes in one presentation "
                f"context, {in_all} so far (at most {MAX_SYNTAXES}, {MAX_SYNTAXES_IN_ALL} in all)",
                "protocol",
            )
    for _, begin, end in (item for item in items if item[0] == 0x50):
        user_items = _items(body[begin:end], 0)
        count = len(user_items)
        for kind, start, stop in user_items:
            maximum = int.from_bytes(body[begin + start : begin + stop], "big")
            if kind == 0x51 and stop - start == 4 and 0 < maximum < MIN_MAXIMUM_LENGTH:
                raise Refused(  # no P-DATA-TF could carry a PDV: pynetdicom fails on each
                    f"an A-ASSOCIATE-RQ with a maximum length of {maximum} bytes (at least "
                    f"{MIN_MAXIMUM_LENGTH}, or 0)",
                    "protocol",
                )
        if count > MAX_USER_ITEMS:
            raise Refused(
                f"an A-ASSOCIATE-RQ with {count} user information items (at most {MAX_USER_ITEMS})",
                "protocol",
            )


def _check_request_text(body: bytearray) -> None:
    """Refused for an A-ASSOCIATE-RQ whose AE titles or UIDs pynetdicom fails to decode, or
    decodes only after logging a traceback: each connection's request would leave twenty lines
    in the log. AE titles are ASCII without control characters or backslashes (PS3.5 6.2), UIDs
    at most 64 ASCII characters (PS3.5 9.1; one trailing NUL is padding)."""
    for name, start in (("called AE title", _CALLED_AE), ("calling AE title", _CALLING_AE)):
        problem = _ae_problem(bytes(body[start : start + AE_LENGTH]), title=True)
        if problem:
            raise Refused(f"an A-ASSOCIATE-RQ whose {name} {problem}", "protocol")
    for name, value in _request_texts(body):
        problem = (
            _ae_problem(value, title=False)
            if name == "implementation version name"
            else _uid_problem(value, empty_allowed=name != RELATED_SOP_CLASS)
        )
        if problem:
            raise Refused(f"an A-ASSOCIATE-RQ whose {name} {problem}", "protocol")


def _ae_problem(raw: bytes, *, title: bool) -> str | None:
    """What pynetdicom refuses in an AE title (`title`: padded with spaces, not empty) or an
    implementation version name (taken as it is)."""
    if not raw.isascii():
        return f"{raw!r} is not ASCII"
    text = raw.decode("ascii").strip() if title else raw.decode("ascii")
    if title and not text:
        return "is empty"
    if len(text) > AE_LENGTH or any(not " " <= c <= "~" or c == "\\" for c in text):
        return f"{raw!r} is not up to 16 ASCII characters without control characters or '\\'"
    return None


def _uid_problem(raw: bytes, *, empty_allowed: bool = True) -> str | None:
    uid = (raw[:-1] if raw.endswith(b"\0") else raw).strip()  # as pydicom's UID() takes it
    if not uid and not empty_allowed:
        return "is empty"
    if not uid.isascii() or len(uid) > UID_LENGTH:
        return f"{raw[: UID_LENGTH + 8]!r} ({len(uid)} bytes) is not up to 64 ASCII characters"
    return None


def _request_texts(body: bytearray) -> list[tuple[str, bytes]]:
    """(what it is, raw value) of each UID and name in an A-ASSOCIATE-RQ's items (PS3.8 9.3.2,
    PS3.7 D.3.3)."""
    texts: list[tuple[str, bytes]] = []
    for kind, begin, end in _items(body, _FIXED_RQ_FIELDS):
        value = bytes(body[begin:end])
        if kind == 0x10:
            texts.append(("application context name", value))
        elif kind == 0x20:  # context ID, 3 reserved bytes, then its sub-items
            names = {0x30: "abstract syntax", 0x40: "transfer syntax"}
            texts += [(names[k], value[b:e]) for k, b, e in _items(value, 4) if k in names]
        elif kind == 0x50:
            for sub, b, e in _items(value, 0):
                if sub == 0x52:
                    texts.append(("implementation class UID", value[b:e]))
                elif sub == 0x55:
                    texts.append(("implementation version name", value[b:e]))
                elif sub in (0x54, 0x56, 0x57):  # each begins with a SOP class UID
                    texts += _prefixed_uids(value[b:e], sub)
    return texts


def _prefixed_uids(value: bytes, kind: int) -> list[tuple[str, bytes]]:
    """The UIDs (each after its 2-byte length) of a role selection (0x54: one), an extended
    negotiation (0x56: one) or a common extended negotiation (0x57: SOP class, service class,
    then related general SOP classes after a length of their own, which pynetdicom reads to
    the item's end)."""
    uids, at = [], 0
    names = ["SOP class UID"] if kind != 0x57 else ["SOP class UID", "service class UID"]
    for name in names:
        if at + 2 > len(value):
            break
        length = int.from_bytes(value[at : at + 2], "big")
        uids.append((name, value[at + 2 : at + 2 + length]))
        at += 2 + length
    if kind == 0x57:
        at += 2
        while at + 2 <= len(value):
            length = int.from_bytes(value[at : at + 2], "big")
            uids.append((RELATED_SOP_CLASS, value[at + 2 : at + 2 + length]))
            at += 2 + length
    return uids


def _address(sock: AssociationSocket) -> str:
    info = sock.assoc.requestor.address_info
    return f"{info.address}:{info.port}"


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's handler, with each association's socket guarded by the server's limits."""

    def _create_association(self):  # type: ignore[no-untyped-def]
        assoc = super()._create_association()
        limits: ConnectionLimits = getattr(self.server, "connection_limits")  # noqa: B009
        store: Store | None = getattr(self.server, "store", None)
        assert assoc.dul.socket is not None
        GuardedSocket.adopt(assoc.dul.socket, limits, store)
        return assoc
