"""Settings every association of ours shares, inbound and outbound."""

import socket

from pynetdicom import AE, evt
from pynetdicom.events import Event

from dicomnode.config import NetworkSettings


def configure_ae(ae_title: str, network: NetworkSettings, max_pdu_size: int) -> AE:
    """An AE with our title, timeouts and PDU size (0: unlimited, ~3x faster than 16 KB)."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = network.acse_timeout
    ae.dimse_timeout = network.dimse_timeout
    ae.network_timeout = network.network_timeout
    ae.connection_timeout = network.connect_timeout
    ae.maximum_pdu_size = max_pdu_size
    return ae


def _set_nodelay(event: Event) -> None:
    # pynetdicom leaves Nagle on; with delayed ACKs that stalls ~40 ms per C-STORE on loopback.
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, _set_nodelay)
