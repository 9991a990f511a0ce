"""The operator's HTTP endpoint: /metrics (Prometheus text), /healthz and /readyz.

A small standard-library server on daemon threads, beside the node and never in its way: each
request thread has a socket timeout, and what waits on the database (a scrape's one read of the
job tables, the readiness checks) is bounded by `http.check_timeout_seconds` (`BoundedCall`), so
a database that hangs gives `dicomnode_database_up 0` and a 503 in time, never a hung request.
The node (`node.py`) starts one when `[http] enabled`; a process without a listener (a worker)
passes no `listener_up` and is ready when its database and disk are.
"""

import contextlib
import errno
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from dicomnode.config import HttpSettings, Settings
from dicomnode.db import Database
from dicomnode.db.stats import check_reachable
from dicomnode.errors import ConfigError, SpoolError
from dicomnode.observe.bounded import BoundedCall
from dicomnode.observe.collector import ConfiguredModels, NodeCollector
from dicomnode.observe.counters import (
    HTTP_CONNECTIONS_REFUSED,
    forwarding_to,
    in_process_metrics,
)
from dicomnode.observe.throttle import ThrottledWarnings
from dicomnode.ports import check_port_free, why_not
from dicomnode.spool import Spool

log = logging.getLogger(__name__)
_refusals = ThrottledWarnings(log)  # a flood of refused connections logs once a minute a host

REQUEST_TIMEOUT_SECONDS = 10.0  # a client that does not send its request in time is dropped
ACCEPT_PAUSE_SECONDS = 1.0  # after an accept that failed for want of descriptors
PLAIN_TEXT = "text/plain; charset=utf-8"

Check = Callable[[], str | None]  # None: fine; else a short reason for the 503


def _short(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line[:200]}"


def _run_checks(checks: list[Check], running: list[str]) -> list[str]:
    """Each check's problem; `running` holds the name of the one under way (a timeout names
    it: "database", when the database is what hangs)."""
    problems = []
    for check in checks:
        running[:] = [getattr(check, "__name__", "a check")]
        try:
            problem = check()
        except Exception as exc:
            problem = _short(exc)
        if problem:
            problems.append(problem)
    running.clear()
    return problems


class Readiness:
    """The checks of /readyz, run as one bounded call (`BoundedCall`): an answer within
    `timeout_seconds` whatever hangs behind them."""

    def __init__(self, checks: list[Check], timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._running: list[str] = []
        self._round = BoundedCall(
            partial(_run_checks, checks, self._running), timeout_seconds, "readiness"
        )

    def problems(self) -> list[str]:
        """Why the process is not ready; empty when it is."""
        try:
            return self._round()
        except TimeoutError:
            limit = f"http.check_timeout_seconds={self.timeout_seconds:g}"
            running = list(self._running)  # the round's thread may clear it meanwhile
            hung = f": {running[0]} still answering" if running else ""
            return [f"checks did not finish within {limit}{hung}"]


def node_checks(
    settings: Settings, db: Database, spool: Spool, listener_up: Callable[[], bool] | None
) -> list[Check]:
    """What /readyz asks of a node: its database answers, its disk takes a write and has room,
    it listens."""
    min_free_mb = settings.node.min_free_disk_mb

    def database() -> str | None:
        try:
            check_reachable(db)
        except Exception as exc:
            return f"database not reachable: {_short(exc)}"
        return None

    def disk() -> str | None:
        try:
            free_mb = spool.free_bytes() / (1024 * 1024)
            if free_mb < min_free_mb:  # first: the clearer reason when the disk is full
                return (
                    f"disk: {free_mb:.0f} MB free in data_dir, "
                    f"below node.min_free_disk_mb={min_free_mb}"
                )
            spool.check_writable()
        except (SpoolError, OSError) as exc:
            return f"disk: {exc}"
        return None

    def listener() -> str | None:
        assert listener_up is not None
        return None if listener_up() else "listener: not accepting associations"

    return [database, disk] + ([listener] if listener_up is not None else [])


class ConnectionSlots:
    """The requests served at once (`http.max_connections`), and from one client address
    (`http.max_connections_per_address`). Each takes a thread and a file descriptor: 1,018 slow
    clients took every descriptor, and the DICOM listener with them; 16 from one host held every
    slot for 10 s at a time, and the orchestrator's probes failed meanwhile (a liveness probe
    that fails restarts the node)."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, address: str) -> str | None:
        """A slot for a connection from `address` (None), or the reason there is none."""
        with self._lock:
            if self._held[address] >= self.per_address:
                return "per_address_cap"
            if self._held.total() >= self.total:
                return "total_cap"
            self._held[address] += 1
            return None

    def give_back(self, address: str) -> None:
        with self._lock:
            self._held[address] -= 1
            if self._held[address] <= 0:
                del self._held[address]


def _host(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request in progress never holds the process up at exit
    registry: CollectorRegistry
    readiness: Readiness

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        slots: ConnectionSlots,
    ) -> None:
        super().__init__(address, handler)
        self._slots = slots

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:  # out of descriptors: the loop would spin on the ready socket
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(ACCEPT_PAUSE_SECONDS)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        host = _host(client_address)
        refused = self._slots.take(host)
        if refused is not None:
            self.shutdown_request(request)  # at a limit: closed, not queued
            HTTP_CONNECTIONS_REFUSED.labels(refused).inc()
            setting = "http.max_connections" + (
                "_per_address" if refused == "per_address_cap" else ""
            )
            limit = self._slots.per_address if refused == "per_address_cap" else self._slots.total
            _refusals.warning(
                (refused, host),
                "http connection closed at once host=%s reason=%s (%s=%d)",
                host,
                refused,
                setting,
                limit,
            )
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.give_back(_host(client_address))
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.give_back(_host(client_address))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer (a scraper's timeout): one DEBUG line, not socketserver's
        traceback on stderr."""
        log.debug("http %s: %s", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_SECONDS  # per read
    server_version = "dicomnode"

    def setup(self) -> None:
        super().setup()
        # The whole request line and headers within the timeout, not each read: a client
        # sending a byte every few seconds held its thread for ever.
        self._deadline = threading.Timer(REQUEST_TIMEOUT_SECONDS, self._too_slow)
        self._deadline.daemon = True
        self._deadline.start()

    def _too_slow(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        self._deadline.cancel()  # the request is in: the answer may take its time
        return super().parse_request()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def do_GET(self) -> None:
        self._answer(*self._route(), with_body=True)

    def do_HEAD(self) -> None:
        """What GET would answer, without its body: monitors and load balancers probe so."""
        self._answer(*self._route(), with_body=False)

    def _route(self) -> tuple[HTTPStatus, bytes, str]:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            return HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return HTTPStatus.OK, b"ok\n", PLAIN_TEXT
        if path == "/readyz":
            problems = self.server.readiness.problems()
            if problems:
                body = "".join(f"{problem}\n" for problem in problems).encode()
                return HTTPStatus.SERVICE_UNAVAILABLE, body, PLAIN_TEXT
            return HTTPStatus.OK, b"ready\n", PLAIN_TEXT
        return HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz, /readyz\n", PLAIN_TEXT

    def _answer(
        self, status: HTTPStatus, body: bytes, content_type: str, *, with_body: bool
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s %s", self.address_string(), format % args)


class HttpEndpoint:
    """One running endpoint; `stop()` closes it."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="http-endpoint", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def check_http_port_free(http: HttpSettings) -> None:
    """ConfigError naming http.port if another program listens there (probed before the node
    makes anything in its data_dir; the endpoint binds it later)."""
    try:
        check_port_free((http.host, http.port), socket.AF_INET)  # the server's, IPv4 only
    except OSError as exc:
        raise _cannot_listen(http, exc) from None


def _cannot_listen(http: HttpSettings, exc: OSError) -> ConfigError:
    hint = "choose another http.port or stop what uses it"
    return ConfigError(
        f"setting http.port: cannot listen on {http.host}:{http.port}: {exc.strerror or exc}"
        f" ({hint if exc.errno == errno.EADDRINUSE else why_not(exc, 'http.port')})"
    )


def start_http_endpoint(
    settings: Settings, db: Database, spool: Spool, listener_up: Callable[[], bool] | None
) -> HttpEndpoint:
    """Listen on `[http] host:port` (raises ConfigError naming the setting if it cannot)."""
    http = settings.http
    registry = CollectorRegistry()  # no auto-describe: registering never reads the DB
    for metric in in_process_metrics():
        registry.register(metric)
    forwarding_to(destination.name for destination in settings.destinations)
    registry.register(NodeCollector(db, spool, http.check_timeout_seconds))
    registry.register(ConfiguredModels(settings.enhance))
    ProcessCollector(registry=registry)
    try:
        slots = ConnectionSlots(http.max_connections, http.max_connections_per_address)
        server = _Server((http.host, http.port), _Handler, slots)
    except OSError as exc:
        raise _cannot_listen(http, exc) from None
    server.registry = registry
    server.readiness = Readiness(
        node_checks(settings, db, spool, listener_up), http.check_timeout_seconds
    )
    log.info(
        "http endpoint listening host=%s port=%d paths=/metrics,/healthz,/readyz",
        http.host,
        http.port,
    )
    return HttpEndpoint(server)
