"""Settings every association of ours shares, inbound and outbound."""

import socket
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.events import Event

from dicomnode.config import NetworkSettings
from dicomnode.dicom import reactor


def configure_ae(
    ae_title: str, network: NetworkSettings, max_pdu_size: int, factory: type[AE] = AE
) -> AE:
    """An AE with our title, timeouts and PDU size (0: unlimited, ~3x faster than 16 KB);
    `factory` is AE or a subclass (the SCU's, which keeps why a connection failed)."""
    ae = factory(ae_title=ae_title)
    ae.acse_timeout = network.acse_timeout
    ae.dimse_timeout = network.dimse_timeout
    ae.network_timeout = network.network_timeout
    ae.connection_timeout = network.connect_timeout
    ae.maximum_pdu_size = max_pdu_size
    return ae


def keep_alive(sock: socket.socket, idle_seconds: float) -> None:
    """TCP keepalive: a peer that vanished (power cut, cable) is noticed, its slot freed."""
    if not idle_seconds:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; other systems keep their defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle_seconds)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle_seconds / 4)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


# pynetdicom's DUL thread sleeps this long whenever a loop found nothing to do (default 1 ms),
# which adds up to ~1 ms to every C-STORE round trip. 0.2 ms measured ~1 ms/instance faster on
# 512x512 CT with no measurable CPU increase (benchmarks/ingest.py). A private attribute: if a
# pynetdicom release renames it, setting it is skipped and only that gain is lost.
DUL_LOOP_DELAY_SECONDS = 0.0002


# pynetdicom's acceptor reactor sleeps 1 ms before each look at its message queue, so a C-STORE
# that arrived waits up to 1 ms before its handler runs. Waiting on the queue itself instead
# starts the handler as soon as the message is decoded; the reactor still looks at A-RELEASE,
# A-ABORT and the idle timer every REACTOR_WAIT_SECONDS (the most a release answer is delayed).
REACTOR_WAIT_SECONDS = 0.01


def _tune_connection(event: Event) -> None:
    dul = event.assoc.dul
    # pynetdicom leaves Nagle on; with delayed ACKs that stalls ~40 ms per C-STORE on loopback.
    sock = dul.socket.socket if dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = DUL_LOOP_DELAY_SECONDS
    # An acceptor's reactor waits on its queue; ours (requestor) only looks, as pynetdicom's.
    reactor.tune(event.assoc, REACTOR_WAIT_SECONDS if event.assoc.is_acceptor else 0)


CONNECTION_TUNING_HANDLER = (evt.EVT_CONN_OPEN, _tune_connection)


def bounded_waits_handler(network: NetworkSettings) -> tuple[Any, Callable[[Event], None]]:
    """The EVT_CONN_OPEN handler that bounds every wait of an association we request.

    pynetdicom leaves a connected socket without a timeout: a peer whose application hangs
    while its kernel still acknowledges (a zero window once its buffers are full) would hold a
    send for ever, and the abort after `dimse_timeout` waits for that send. With this each read
    and write fails after `network.network_timeout` (to pynetdicom: the transport closed), and
    TCP keepalive notices a peer that vanished, as on the receiving side.
    """

    def bound(event: Event) -> None:
        transport = event.assoc.dul.socket
        sock = transport.socket if transport is not None else None
        if sock is not None:
            sock.settimeout(network.network_timeout)
            keep_alive(sock, network.tcp_keepalive_seconds)

    return evt.EVT_CONN_OPEN, bound
