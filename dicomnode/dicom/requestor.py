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
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicomnode.config import Settings
from dicomnode.dicom.association import configure_ae
from dicomnode.dicom.bounded_socket import BoundedSocket, ConnectionLimits, Refused
from dicomnode.observe.counters import ANSWERS_ABORTED

log = logging.getLogger(__name__)

# The most P-DATA one message from a destination may take (a Storage Commitment report of
# ~400,000 instances); past it the association is aborted.
MAX_ANSWER_BYTES = 64 << 20


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

    def message_ended(self) -> None:
        """Each message the peer ends starts the budget anew."""
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
