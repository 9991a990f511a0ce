"""The listening socket: a connection becomes an association only once it shows it is a caller.

pynetdicom's stock server hands every accepted connection straight to an association thread, and
that thread waits up to `network.acse_timeout` for an A-ASSOCIATE-RQ even after the peer has closed:
a load balancer's health check (connect, close) holds one of `node.max_associations` slots for that
long, and a few of them lock real callers out. Its TLS handshake runs in the accepting thread with
no time limit, so one silent TLS caller stalls every later one, and socketserver drops the
handshake's error without a word.

Here the accept loop only accepts. In the connection's own thread, within `acse_timeout`, the peer
must send its first byte (a probe that closes is dropped quietly) and, with TLS, finish the
handshake (a failure is one log line with the address and the reason); only then does pynetdicom
get the socket.
"""

import logging
import socket
import ssl
import threading
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.dicom.tls import describe

log = logging.getLogger(__name__)


class AssociationListener(ThreadedAssociationServer):
    """A ThreadedAssociationServer that screens connections before they count as associations."""

    first_byte_timeout: float = 30.0
    # A screening thread holds no data: stopping the node must not wait for a silent caller.
    daemon_threads = True
    block_on_close = False

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        return self.socket.accept()  # not wrapped here: see process_request_thread

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        host, port = client_address[:2]
        sock = request
        try:
            sock.settimeout(self.first_byte_timeout)
            if not sock.recv(1, socket.MSG_PEEK):
                # A port probe (a health check, a load balancer): no caller, nothing to report.
                log.debug("connection closed before any request address=%s:%s", host, port)
                self.shutdown_request(sock)
                return
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                sock.do_handshake()
            sock.settimeout(None)  # as accepted sockets are; pynetdicom polls with select
        except OSError as exc:  # ssl.SSLError and timeouts included
            if isinstance(exc, ssl.SSLError) or self.ssl_context is not None:
                log.warning("TLS handshake failed address=%s:%s: %s", host, port, describe(exc))
            else:
                log.info("connection dropped before any request address=%s:%s: %s", host, port, exc)
            self.shutdown_request(sock)
            return
        super().process_request_thread(sock, client_address)


def start_listener(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext | None,
    first_byte_timeout: float,
    evt_handlers: list[tuple],
) -> AssociationListener:
    """Listen in a background thread, as `ae.start_server(..., block=False)` does."""
    server = ae.make_server(
        address,
        ssl_context=context,
        evt_handlers=evt_handlers,
        server_class=AssociationListener,
    )
    server.first_byte_timeout = first_byte_timeout
    name = "TlsAcceptorServer" if context is not None else "AcceptorServer"
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    # What start_server does too: AE.shutdown() stops the servers listed here, and the
    # server's own shutdown() removes itself from the list.
    ae._servers.append(server)
    return server
