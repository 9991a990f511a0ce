"""The listening socket: a connection becomes an association only once it shows it is a caller.

pynetdicom's stock server hands every accepted connection straight to an association thread, and
that thread waits up to `network.acse_timeout` for an A-ASSOCIATE-RQ even after the peer has closed:
a load balancer's health check (connect, close) holds one of `node.max_associations` slots for that
long, and a few of them lock real callers out. Its TLS handshake runs in the accepting thread with
no time limit, so one silent TLS caller stalls every later one, and socketserver drops the
handshake's error without a word.

Here the accept loop only accepts. In the connection's own thread, within `acse_timeout`, the peer
must send its first byte (a probe that closes is dropped quietly), then its whole A-ASSOCIATE-RQ
(the first REQUEST_SEEN_BYTES of a larger one) or, with TLS, finish the handshake (a failure is
one log line with the address and the reason); only then does pynetdicom get the socket, with
TCP keepalive on, a timeout on every read and write, and each PDU read within the limits of
`receive/guard.py`. `node.max_associations_per_address` (0: no cap) refuses a connection from
an address that already holds that many, before any byte is read, and beyond
4 x `node.max_associations` connections still to show themselves every new one is refused: a
flood of silent connections cannot take the descriptors and threads real callers need. One
address's connections that have not sent their request yet may hold half of that room, so that
its flood leaves the other half to everyone else; a connection that sent one byte of it and
stopped used to count as an association from then on, and max_associations of them refused
every real caller for acse_timeout.
"""

import copy
import errno
import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.dicom.association import keep_alive
from dicomnode.dicom.tls import describe
from dicomnode.observe.counters import CONNECTIONS_ABORTED
from dicomnode.observe.throttle import ThrottledWarnings
from dicomnode.receive.guard import ConnectionLimits, GuardedRequestHandler
from dicomnode.receive.store_lane import Store

log = logging.getLogger(__name__)
# Refusals are counted one by one (metrics) but logged once a minute per reason and address.
_refusals = ThrottledWarnings(log)

# How many connections may wait to be screened (to send their A-ASSOCIATE-RQ) per association
# the node may hold: room for bursts of callers, not for a flood of silent ones.
SCREENING_PER_ASSOCIATION = 4
# Of that room, what one address's silent connections (no whole A-ASSOCIATE-RQ sent yet) may
# hold, per association the node may hold: half of it. One address's flood of them took it all
# for acse_timeout, and real callers from everywhere else were refused meanwhile. A modality's
# connections send their request at once, in one piece.
SILENT_PER_ADDRESS = 2
# How much of an A-ASSOCIATE-RQ is waited for before pynetdicom gets the connection: the whole
# of any the guard accepts (`receive/guard.py`: 2,048 transfer syntaxes, 512 user items at most,
# ~190 KB; DCMTK's storescu proposing every storage class sends ~15 KB). The kernel grows the
# receive buffer for the wait; where it cannot hold that much, the wait ends early and pynetdicom
# reads the rest. A request that stopped at 40 KB of 60 used to take an association's place.
REQUEST_SEEN_BYTES = 256 * 1024
_PDU_HEADER = 6  # type, reserved, 4-byte length (PS3.8 9.3.1)


class AssociationListener(ThreadedAssociationServer):
    """A ThreadedAssociationServer that screens connections before they count as associations."""

    first_byte_timeout: float = 30.0
    keepalive_seconds: float = 0.0
    max_per_address: int = 0
    connection_limits = ConnectionLimits(max_pdu_bytes=0, budget_bytes=0, pdu_seconds=60.0)
    store: Store | None = None  # C-STORE requests by the store lane (receive/store_lane.py)
    # Connections the kernel queues before they are accepted (socketserver's default, 5, dropped
    # a burst's SYNs, which TCP retries only after 1, 3, 7 s).
    request_queue_size = 128
    # A screening thread holds no data: stopping the node must not wait for a silent caller.
    daemon_threads = True
    block_on_close = False
    _screening: Counter[str]  # per address: connections from accept until they end
    _silent: Counter[str]  # per address: of those, the ones whose request is not whole yet
    _screening_lock: threading.Lock
    # Set by shutdown(): a connection still being screened then gets no association (the node
    # waits for the associations in progress, and must not get new ones while it stops).
    closing = False

    def shutdown(self) -> None:
        self.closing = True
        super().shutdown()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        try:
            return self.socket.accept()  # not wrapped here: see process_request_thread
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The caller stays queued and the socket readable: without a pause the
                # accepting loop would spin a core until a descriptor is free again.
                log.warning("cannot accept a connection: %s; pausing accepts for 1 s", exc)
                time.sleep(1.0)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accepting thread: the caps, before a thread is spent on the connection."""
        host, port = client_address[:2]
        limit = SCREENING_PER_ASSOCIATION * self.ae.maximum_associations
        with self._screening_lock:
            screening = sum(self._screening.values())
            silent_here = self._silent[host]
        if screening >= limit:
            # Connections that have not asked for an association yet (each may take
            # network.acse_timeout to say nothing): a flood of them must not exhaust the
            # process's descriptors and threads for the callers that do.
            _refusals.warning(
                ("screening_cap", host),
                "connection refused address=%s:%s reason=%d connections waiting for an "
                "A-ASSOCIATE-RQ (%d x node.max_associations)",
                host,
                port,
                screening,
                SCREENING_PER_ASSOCIATION,
            )
            CONNECTIONS_ABORTED.labels("screening_cap").inc()
            self.shutdown_request(request)
            return
        if silent_here >= SILENT_PER_ADDRESS * self.ae.maximum_associations:
            _refusals.warning(
                ("silent_cap", host),
                "connection refused address=%s:%s reason=%d connections from this address "
                "that have not sent a whole A-ASSOCIATE-RQ yet (%d x node.max_associations)",
                host,
                port,
                silent_here,
                SILENT_PER_ADDRESS,
            )
            CONNECTIONS_ABORTED.labels("silent_cap").inc()
            self.shutdown_request(request)
            return
        if self.max_per_address and self._connections_from(host) >= self.max_per_address:
            _refusals.warning(
                ("per_address_cap", host),
                "connection refused address=%s:%s reason=%d connections from this address "
                "(node.max_associations_per_address)",
                host,
                port,
                self.max_per_address,
            )
            CONNECTIONS_ABORTED.labels("per_address_cap").inc()
            self.shutdown_request(request)
            return
        with self._screening_lock:
            self._screening[host] += 1
            self._silent[host] += 1
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread to screen it (none could be started): not counted
            self._spoke(host)
            self._screened(host)
            raise

    def _connections_from(self, host: str) -> int:
        associations = sum(
            1 for assoc in self.active_associations if assoc.requestor.address == host
        )
        with self._screening_lock:
            return associations + self._screening[host]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self._screen(request, client_address)
        finally:
            self._screened(client_address[0])

    def _screened(self, host: str) -> None:
        _count_down(self._screening, host, self._screening_lock)

    def _spoke(self, host: str) -> None:
        """The connection sent its request, or ended before it did: no longer silent."""
        _count_down(self._silent, host, self._screening_lock)

    def _screen(self, request: Any, client_address: Any) -> None:
        host, port = client_address[:2]
        sock = request
        try:
            try:
                keep_alive(sock, self.keepalive_seconds)
                sock.settimeout(self.first_byte_timeout)
                deadline = time.monotonic() + self.first_byte_timeout
                first = sock.recv(8, socket.MSG_PEEK)
                plain_request = bool(first) and first[0] == _A_ASSOCIATE_RQ
                if plain_request and self.ssl_context is None:
                    missing = _request_missing(sock, deadline)
                else:
                    missing = None  # the rest is the TLS handshake's, or the refusal's below
            finally:
                self._spoke(host)
            if missing is not None:
                self._drop_unfinished(sock, host, port, *missing)
                return
            if not first:
                # A port probe (a health check, a load balancer): no caller, nothing to report.
                log.debug("connection closed before any request address=%s:%s", host, port)
                self.shutdown_request(sock)
                return
            expected = _TLS_HANDSHAKE if self.ssl_context is not None else _A_ASSOCIATE_RQ
            if first[0] != expected:
                # An HTTP client, a scanner, TLS to a plain port: pynetdicom would wait out
                # network.acse_timeout for an A-ASSOCIATE-RQ, holding an association's place.
                CONNECTIONS_ABORTED.labels("not_dicom").inc()
                _refusals.warning(  # a health check over HTTP every few seconds: once a minute
                    ("not_dicom", host),
                    "connection refused address=%s:%s: %s (first bytes %r)",
                    host,
                    port,
                    _not_dicom(first, tls=self.ssl_context is not None),
                    first,
                )
                self.shutdown_request(sock)
                return
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                sock.do_handshake()
            # pynetdicom polls with select; the timeout bounds what it reads or writes after.
            sock.settimeout(self.connection_limits.pdu_seconds)
        except OSError as exc:  # ssl.SSLError and timeouts included
            if isinstance(exc, ssl.SSLError) or self.ssl_context is not None:
                _refusals.warning(  # per address: a scanner's many handshakes, once a minute
                    ("tls", host),
                    "TLS handshake failed address=%s:%s: %s",
                    host,
                    port,
                    describe(exc),
                )
            else:
                # A probe that resets (a health check): as common as one that closes.
                log.debug(
                    "connection dropped before any request address=%s:%s: %s", host, port, exc
                )
            self.shutdown_request(sock)
            return
        if self.closing:
            log.info("connection dropped: the node is stopping address=%s:%s", host, port)
            self.shutdown_request(sock)
            return
        # Counted as an association from here on (pynetdicom's active_associations).
        super().process_request_thread(sock, client_address)

    def _drop_unfinished(
        self, sock: socket.socket, host: str, port: int, seen: int, wanted: int
    ) -> None:
        CONNECTIONS_ABORTED.labels("stalled").inc()
        _refusals.warning(
            ("unfinished_request", host),
            "connection dropped address=%s:%s: %d of %d bytes of its A-ASSOCIATE-RQ within "
            "network.acse_timeout=%gs",
            host,
            port,
            seen,
            wanted,
            self.first_byte_timeout,
        )
        self.shutdown_request(sock)


def _request_missing(sock: socket.socket, deadline: float) -> tuple[int, int] | None:
    """Wait until the A-ASSOCIATE-RQ whose first byte is there is whole in the receive buffer
    (its first REQUEST_SEEN_BYTES), or the caller closed: None; (bytes seen, bytes waited for)
    when `deadline` came first. Nothing is read: the kernel wakes the wait once so many bytes
    are in (SO_RCVLOWAT), or when it cannot buffer more (the peek then comes back short)."""
    wanted = _PDU_HEADER
    try:
        while True:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
            waiting = select.poll()
            waiting.register(sock, select.POLLIN)
            left = deadline - time.monotonic()
            if left <= 0 or not waiting.poll(left * 1000):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                return len(sock.recv(wanted, socket.MSG_PEEK | socket.MSG_DONTWAIT)), wanted
            seen = sock.recv(wanted, socket.MSG_PEEK)
            if len(seen) < wanted or wanted > _PDU_HEADER:
                return None  # whole, or closed early: pynetdicom reads and reports it
            length = int.from_bytes(seen[2:_PDU_HEADER], "big")
            wanted = min(_PDU_HEADER + length, REQUEST_SEEN_BYTES)
            if wanted <= _PDU_HEADER:
                return None
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def _count_down(counts: Counter[str], host: str, lock: threading.Lock) -> None:
    with lock:
        counts[host] -= 1
        if counts[host] <= 0:
            del counts[host]


_A_ASSOCIATE_RQ = 0x01  # the first PDU of every DICOM association (PS3.8 9.3.2)
_TLS_HANDSHAKE = 0x16  # a TLS record of the handshake (RFC 8446 5.1): a ClientHello first


def _not_dicom(first: bytes, tls: bool) -> str:
    """What the caller's first bytes say it is, for the line that refuses it."""
    if tls and first[0] == _A_ASSOCIATE_RQ:
        return "plain DICOM to a TLS listener"
    if not tls and first[0] == _TLS_HANDSHAKE:
        return "TLS to a listener without node.tls"
    return "not a DICOM association request"


class SharedPortListener(AssociationListener):
    """An AssociationListener whose socket shares its port with the node's other listener
    processes (SO_REUSEPORT: the kernel spreads new connections over them)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _Contexts(list):  # type: ignore[type-arg]
    """The server's supported presentation contexts, cheap to deep-copy.

    pynetdicom deep-copies them for every new association: with every storage SOP class and
    every transfer syntax that re-validates thousands of immutable UID strings (~40 ms of CPU,
    several times that on a busy host, per association, under the interpreter lock). A copy
    of each context and of its lists, sharing the UIDs, is the same value at ~1 % of the cost.
    """

    def __deepcopy__(self, _memo: dict[int, object]) -> list[object]:
        copies = []
        for context in self:
            clone = copy.copy(context)
            for name, value in vars(context).items():
                if isinstance(value, list):
                    setattr(clone, name, list(value))
            copies.append(clone)
        return copies


def start_listener(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext | None,
    first_byte_timeout: float,
    evt_handlers: list[tuple],
    *,
    limits: ConnectionLimits,
    keepalive_seconds: float,
    max_per_address: int,
    shared_port: bool = False,
    store: Store | None = None,
) -> AssociationListener:
    """Listen in a background thread, as `ae.start_server(..., block=False)` does;
    `shared_port`: beside the node's other listener processes (SO_REUSEPORT); `store`: take
    C-STORE requests by the store lane, straight to this store."""
    server = ae.make_server(
        address,
        ssl_context=context,
        evt_handlers=evt_handlers,
        server_class=SharedPortListener if shared_port else AssociationListener,
        request_handler=GuardedRequestHandler,
    )
    server.first_byte_timeout = first_byte_timeout
    server.contexts = _Contexts(server.contexts)
    server.connection_limits = limits
    server.keepalive_seconds = keepalive_seconds
    server.max_per_address = max_per_address
    server.store = store
    server._screening = Counter()
    server._silent = Counter()
    server._screening_lock = threading.Lock()
    name = "TlsAcceptorServer" if context is not None else "AcceptorServer"
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    # What start_server does too: AE.shutdown() stops the servers listed here, and the
    # server's own shutdown() removes itself from the list.
    ae._servers.append(server)
    return server
