"""What one inbound connection may make the node hold: bytes per PDU, bytes in flight, time.

pynetdicom reads a PDU by the length its header announces (up to 4 GiB, whatever maximum we
advertised) with a blocking `recv` that has no deadline once the first byte is there, and it
queues P-DATA without limit until a message is complete. Here each PDU is read whole by us
before pynetdicom sees it, and the association is aborted (A-ABORT, PS3.8 9.3.8, then the
connection closed; one log line with the address, calling AE and reason) when:

* a P-DATA-TF is longer than the maximum length we advertised (PS3.8 D.3.3.1), or another PDU
  longer than `OTHER_PDU_LIMIT`;
* the P-DATA received since our last response passes the byte budget (`node.max_instance_mb`
  plus room for the command set): a caller that never sends its last fragment, or sends
  messages without waiting for our answers (PS3.7 D.3.3.3: one operation at a time unless
  negotiated), is cut off at the budget instead of filling memory;
* one PDU takes longer than `network.network_timeout` from its first byte to its last, so a
  caller that drips bytes is dropped like a silent one.

pynetdicom then sees a closed connection (an event it handles without a traceback).
"""

import contextlib
import logging
import socket
import struct
import time
from dataclasses import dataclass

from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicomnode.observe.counters import CONNECTIONS_ABORTED

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
OTHER_PDU_LIMIT = 1 << 20  # an A-ASSOCIATE-RQ with 128 contexts is ~50 KB
COMMAND_ALLOWANCE = 1 << 16  # command sets and PDV headers on top of the data set
_HEADER = struct.Struct(">BBL")  # PS3.8 9.3.1: type, reserved, length
_INVALID_PARAMETER_VALUE = 0x06  # PS3.8 9.3.8, source 0x02 (service provider)


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one inbound connection (0: none for the byte limits)."""

    max_pdu_bytes: int
    budget_bytes: int
    pdu_seconds: float


class _Refused(Exception):
    """One limit broken: the message is the reason that goes to the log, `kind` the metric's."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket, reading each PDU whole within the connection's limits."""

    limits: ConnectionLimits
    refused_reason: str | None
    _body: bytearray | None
    _in_flight: int

    @classmethod
    def adopt(cls, sock: AssociationSocket, limits: ConnectionLimits) -> "GuardedSocket":
        """Turn the socket pynetdicom made for an association into a guarded one.

        pynetdicom's RequestHandler builds its AssociationSocket inline and queues events in
        its constructor, so the instance is re-classed rather than built a second time.
        """
        sock.__class__ = cls
        guarded = sock
        assert isinstance(guarded, GuardedSocket)
        guarded.limits = limits
        guarded.refused_reason = None
        guarded._body = None
        guarded._in_flight = 0
        return guarded

    def answered(self) -> None:
        """We sent a response: the P-DATA it answers no longer counts against the budget."""
        self._in_flight = 0

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom asks for a PDU header (6 bytes), then for its body: read both here."""
        if self._body is not None:
            body, self._body = self._body, None
            return body
        try:
            header, body = self._read_pdu()
        except _Refused as exc:
            CONNECTIONS_ABORTED.labels(exc.kind).inc()
            self._refuse(str(exc))
            return bytearray()  # pynetdicom: connection closed (Evt17), no traceback
        except OSError:
            return bytearray()  # reset by the peer: pynetdicom reports the closed connection
        self._body = body
        return header

    def _read_pdu(self) -> tuple[bytearray, bytearray]:
        deadline = time.monotonic() + self.limits.pdu_seconds
        header = self._read_exactly(6, deadline)
        if len(header) < 6:
            return header, bytearray()  # closed by the peer: pynetdicom handles it
        pdu_type, _, length = _HEADER.unpack(header)
        if pdu_type == P_DATA_TF:
            if self.limits.max_pdu_bytes and length > self.limits.max_pdu_bytes:
                raise _Refused(
                    f"P-DATA-TF of {length} bytes, more than the maximum length "
                    f"{self.limits.max_pdu_bytes} we accepted (node.max_pdu_size, PS3.8 D.3.3.1)",
                    "pdu_too_large",
                )
            self._in_flight += length
            if self.limits.budget_bytes and self._in_flight > self.limits.budget_bytes:
                raise _Refused(
                    f"more than {self.limits.budget_bytes} bytes of P-DATA for one message "
                    "(node.max_instance_mb)",
                    "message_too_large",
                )
        elif length > OTHER_PDU_LIMIT:
            raise _Refused(f"PDU type 0x{pdu_type:02X} of {length} bytes", "pdu_too_large")
        body = self._read_exactly(length, deadline)
        return header, body

    def _read_exactly(self, size: int, deadline: float) -> bytearray:
        """`size` bytes, fewer if the peer closes; _Refused past the deadline."""
        assert self.socket is not None
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        try:
            while got < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.socket.settimeout(remaining)
                count = self.socket.recv_into(view[got:], min(size - got, 1 << 20))
                if not count:
                    del view
                    return buffer[:got]
                got += count
        except TimeoutError:
            raise _Refused(
                f"stalled: {got} of {size} bytes of a PDU in network.network_timeout="
                f"{self.limits.pdu_seconds:g}s",
                "stalled",
            ) from None
        finally:
            if self.socket is not None:
                self.socket.settimeout(self.limits.pdu_seconds)  # the backstop for send()
        return buffer

    def _refuse(self, reason: str) -> None:
        """Tell the peer (A-ABORT, best effort) and close; one log line says who and why."""
        self.refused_reason = reason
        requestor = self.assoc.requestor
        log.warning(
            "association aborted address=%s calling_aet=%s reason=%s",
            _address(self),
            requestor.ae_title or "-",
            reason,
        )
        if self.socket is None:
            return
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = _INVALID_PARAMETER_VALUE
        with contextlib.suppress(OSError):
            self.socket.settimeout(1.0)  # a peer that does not read must not hold us here
            self.socket.sendall(abort.encode())
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)


def _address(sock: AssociationSocket) -> str:
    info = sock.assoc.requestor.address_info
    return f"{info.address}:{info.port}"


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's handler, with each association's socket guarded by the server's limits."""

    def _create_association(self):  # type: ignore[no-untyped-def]
        assoc = super()._create_association()
        limits: ConnectionLimits = getattr(self.server, "connection_limits")  # noqa: B009
        assert assoc.dul.socket is not None
        GuardedSocket.adopt(assoc.dul.socket, limits)
        return assoc
