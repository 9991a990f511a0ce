"""The TLS listener: each caller's handshake runs in its own thread, bounded and logged.

pynetdicom's stock server wraps an accepted socket in the accepting thread, with the handshake
unbounded in time: one caller that connects and stays silent stalls every later caller. And
socketserver drops the handshake's error without a word. Here the accept loop only accepts; the
handshake runs in the connection's thread within `network.acse_timeout`, and a failure is one log
line with the caller's address and the reason.
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


class TlsAssociationServer(ThreadedAssociationServer):
    """A ThreadedAssociationServer whose TLS handshakes cannot block the accept loop."""

    handshake_timeout: float = 30.0

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        return self.socket.accept()  # not wrapped here: see process_request_thread

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        assert self.ssl_context is not None
        host, port = client_address[:2]
        sock = request
        try:
            sock.settimeout(self.handshake_timeout)
            if not sock.recv(1, socket.MSG_PEEK):
                # A port probe (a health check, a load balancer): no caller, nothing to report.
                log.debug("connection closed before the TLS handshake address=%s:%s", host, port)
                self.shutdown_request(sock)
                return
            sock = self.ssl_context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
            sock.do_handshake()
            sock.settimeout(None)  # as accepted sockets are; pynetdicom polls with select
        except OSError as exc:  # ssl.SSLError and timeouts included
            log.warning("TLS handshake failed address=%s:%s: %s", host, port, describe(exc))
            self.shutdown_request(sock)
            return
        super().process_request_thread(sock, client_address)


def start_tls_server(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext,
    handshake_timeout: float,
    evt_handlers: list[tuple],
) -> TlsAssociationServer:
    """Listen in a background thread, as `ae.start_server(..., block=False)` does."""
    server = ae.make_server(
        address,
        ssl_context=context,
        evt_handlers=evt_handlers,
        server_class=TlsAssociationServer,
    )
    server.handshake_timeout = handshake_timeout
    thread = threading.Thread(target=server.serve_forever, name="TlsAcceptorServer", daemon=True)
    thread.start()
    # What start_server does too: AE.shutdown() stops the servers listed here, and the
    # server's own shutdown() removes itself from the list.
    ae._servers.append(server)
    return server
