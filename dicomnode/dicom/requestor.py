"""An AE for the associations the node requests: a destination's, a caller's for its
Storage Commitment report.

Their sockets keep the error of their connect (`forward/associate.py` says why an association
could not be opened), read each PDU whole within the limits of `answer_limits`
(`dicom/bounded_socket.py`: a peer that drips a long PDU, or sends fragments without end,
cannot hold the thread that waits for its answer, or the node's stop, past network_timeout,
nor fill the node's memory), and sleep until there is something to send or read
(`dicom/waking.py`).
"""

import logging
import socket
import struct
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicomnode.config import Settings
from dicomnode.dicom.association import configure_ae
from dicomnode.dicom.bounded_socket import BoundedSocket, ConnectionLimits, Refused
from dicomnode.dicom.wire import P_DATA_TF, fragments
from dicomnode.observe.counters import ANSWERS_ABORTED

log = logging.getLogger(__name__)

# The most P-DATA one message from a destination may take (a Storage Commitment report of
# ~400,000 instances); past it the association is aborted.
MAX_ANSWER_BYTES = 64 << 20
# More of a command set than any command holds (a few hundred bytes): what is kept to read it.
COMMAND_SET_LIMIT = 64 << 10


class TcpSocket(socket.socket):
    """A plain TCP socket that keeps the error of its connect()."""

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise


class RequestorSocket(BoundedSocket):
    """The socket of an association we request: keeps its TCP socket's connect error; reads
    each PDU whole within the limits of `answer_limits`; and its DUL thread sleeps until
    there is something to send or read instead of waking every 0.2 ms for as long as the
    association is open."""

    tcp: TcpSocket | None = None
    # The command set of the peer's message so far (PS3.7 6.3.1: Implicit VR Little Endian),
    # up to COMMAND_SET_LIMIT: whether a data set follows it decides when the message ends.
    _command: bytearray | None = None

    def checked(self, pdu_type: int, body: bytearray) -> None:
        """Each message the peer ends (`messages_ended`) starts the budget anew."""
        if pdu_type == P_DATA_TF:
            ended, self._command = messages_ended(self._command or bytearray(), body)
            if ended:
                self.message_done()

    def refused(self, error: Refused) -> None:
        ANSWERS_ABORTED.labels(error.kind).inc()
        acceptor = self.assoc.acceptor
        log.warning(
            "association aborted peer=%s:%d reason=%s", acceptor.address, acceptor.port, error
        )
        super().refused(error)

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        made = super()._create_socket(address)
        timeout = made.gettimeout()
        tcp = TcpSocket(made.family, made.type, made.proto, fileno=made.detach())
        tcp.settimeout(timeout)
        self.tcp = tcp
        return tcp


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
            return length == 2 and command[at + 8 : at + 10] == b"\x01\x01"
        at += 8 + length
    return False


def answer_limits(settings: Settings) -> ConnectionLimits:
    """What a destination may send us on an association we requested: PDUs up to the maximum
    length we advertised (`max_pdu`), the A-ASSOCIATE-AC whole within acse_timeout and each
    later PDU within network_timeout, and at most
    `MAX_ANSWER_BYTES` of P-DATA for one message (a C-STORE response has no data set; a
    Storage Commitment report lists each instance in ~150 bytes)."""
    return ConnectionLimits(
        max_pdu_bytes=settings.node.max_pdu_size,  # what `associate(max_pdu=...)` announces
        budget_bytes=MAX_ANSWER_BYTES,
        pdu_seconds=settings.network.network_timeout,
        request_seconds=settings.network.acse_timeout,  # the A-ASSOCIATE-AC whole
        budget_setting="an answer's limit",
    )


class RequestorAE(AE):
    """An AE whose associations read within `limits` (set before `associate`)."""

    limits: ConnectionLimits

    # pynetdicom's hook for the association's socket; were it renamed in a later release, the
    # plain socket would be used and a failed connect read "could not connect" without a cause.
    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: Any
    ) -> AssociationSocket:
        sock = RequestorSocket(assoc, address=address)
        sock.tls_args = tls_args
        sock.bound(self.limits)
        return sock


def requestor_ae(settings: Settings) -> AE:
    """An AE with our title, timeouts and PDU size whose associations read within
    `answer_limits`."""
    node = settings.node
    ae = configure_ae(node.ae_title, settings.network, node.max_pdu_size, RequestorAE)
    assert isinstance(ae, RequestorAE)
    ae.limits = answer_limits(settings)
    return ae
