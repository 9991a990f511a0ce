"""The operator's HTTP endpoint: /metrics (Prometheus text), /healthz and /readyz.

A small standard-library server on daemon threads, beside the node and never in its way: each
request thread has a socket timeout, and what waits on the database (a scrape's one read of the
job tables, the readiness checks) is bounded by `http.check_timeout_seconds` (`BoundedCall`), so
a database that hangs gives `dicomnode_database_up 0` and a 503 in time, never a hung request.
The node (`node.py`) starts one when `[http] enabled`; a process without a listener (a worker)
passes no `listener_up` and is ready when its database and disk are.
"""

import logging
import threading
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from dicomnode.config import Settings
from dicomnode.db import Database
from dicomnode.db.stats import check_reachable
from dicomnode.errors import ConfigError, SpoolError
from dicomnode.observe.bounded import BoundedCall
from dicomnode.observe.collector import ConfiguredModels, NodeCollector
from dicomnode.observe.counters import forwarding_to, in_process_metrics
from dicomnode.spool import Spool

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0  # a client that does not send its request in time is dropped

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request in progress never holds the process up at exit
    registry: CollectorRegistry
    readiness: Readiness


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = "dicomnode"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(HTTPStatus.OK, b"ok\n")
        elif path == "/readyz":
            problems = self.server.readiness.problems()
            if problems:
                body = "".join(f"{problem}\n" for problem in problems).encode()
                self._answer(HTTPStatus.SERVICE_UNAVAILABLE, body)
            else:
                self._answer(HTTPStatus.OK, b"ready\n")
        else:
            self._answer(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz, /readyz\n")

    def _answer(
        self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
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
        server = _Server((http.host, http.port), _Handler)
    except OSError as exc:
        raise ConfigError(
            f"setting http.port: cannot listen on {http.host}:{http.port}: {exc.strerror or exc}"
            " (choose another http.port or stop what uses it)"
        ) from None
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
