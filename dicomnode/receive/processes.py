"""Receiver processes beside the node's own listener, all accepting on node.port (SO_REUSEPORT).

pynetdicom's association threads share one interpreter lock, so one process stores on one core
however many senders call at once. With `node.listener_processes` = N > 1 the node starts N - 1
receiver processes ("spawn": a fresh interpreter, no fork of a process whose threads run). Each
binds node.port with SO_REUSEPORT (the kernel spreads new connections over the N sockets) and
runs the same handlers into the same spool and database (an instance is answered Success only
once its file is fsync'd and its row committed, as in the node's own listener). The node's own
process keeps the data_dir lock, the completion rule, the router, the workers, the ticks and
[http]; a receiver process takes no lock.

Each receiver holds a pipe to the node: it reports its open associations and its counters (which
the node adds to its own, so /metrics counts every process) every REPORT_SECONDS, and stops
(letting its associations finish) when the node says so or the pipe closes. A node that dies,
even by SIGKILL, takes its receivers with it at once (Linux PR_SET_PDEATHSIG: none outlives it or
keeps the port from the node started next; what they were receiving was not answered, so its
senders send it again). A receiver that dies
while the node runs is started again, with one log line. SIGINT (a terminal's Ctrl-C reaches
the whole process group) is the node's to handle; SIGTERM (a service manager's stop signal to
every process) stops a receiver cleanly, a second one at once.
"""

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pynetdicom import evt

from dicomnode.config import Settings
from dicomnode.db import open_database
from dicomnode.errors import ConfigError
from dicomnode.native_heap import return_large_blocks
from dicomnode.observe.counters import CounterTotals, add_receiver_totals, receiver_totals
from dicomnode.receive.scp import start_receiver
from dicomnode.spool import Spool

log = logging.getLogger(__name__)

REPORT_SECONDS = 0.5
START_SECONDS = 120.0  # a fresh interpreter imports pynetdicom, pydicom, SQLAlchemy: seconds
RESTART_DELAY_SECONDS = (1.0, 30.0)  # after a crash: first delay, doubling up to the second
STABLE_SECONDS = 60.0  # a receiver that ran this long before it died: back to the first delay
_CONTEXT = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(node_pid: int) -> None:
    """Have the kernel SIGKILL this process when the node's process ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return  # the pipe's end still stops it, once its associations finish
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != node_pid:  # the node died before that took effect
        os._exit(1)


def serve_receiver(
    settings: Settings,
    number: int,
    conn: Connection,
    log_setup: Callable[[], None] | None,
    node_pid: int,
    identity: str | None,
) -> None:
    """A receiver process's main: listen until the node says stop, or goes away. `identity` is
    the spool's, as the node claimed it: a receiver started again while the disk is away
    refuses every store, as the node does."""
    stop = threading.Event()

    def on_sigterm(_signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(1)  # the second SIGTERM: the associations in progress are not answered
        stop.set()

    _die_with(node_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    if log_setup is not None:
        log_setup()
    return_large_blocks()  # as the node's own process (a fresh interpreter: not inherited)
    try:
        db = open_database(settings.node.effective_database_url, create=False)
        spool = Spool(settings.node.data_path / "spool", identity)
        server = start_receiver(settings, spool, db, shared_port=True, quiet=True)
    except Exception as exc:  # told to the node, which refuses to start or tries again
        conn.send(("failed", str(exc)))
        return
    sending = threading.Lock()

    def report(_event: object = None) -> None:
        with sending:
            conn.send(("report", len(server.active_associations), receiver_totals()))

    def report_connection(_event: object) -> None:
        with contextlib.suppress(OSError):  # the node is gone: the main loop sees it too
            report()

    conn.send(("ready", os.getpid()))
    # A new association is reported at once: a stop that follows counts it.
    server.bind(evt.EVT_REQUESTED, report_connection)
    while not stop.is_set():
        try:
            if conn.poll(REPORT_SECONDS):
                conn.recv()  # any message is "stop"
                break
            report()
        except (EOFError, OSError):
            break  # the node is gone: stop as it would have asked
    server.unbind(evt.EVT_REQUESTED, report_connection)
    server.shutdown()
    while server.active_associations:  # never exit under a handler that is still storing
        time.sleep(0.1)
    db.dispose()
    with contextlib.suppress(OSError), sending:  # the node may be gone
        conn.send(("report", 0, receiver_totals()))
    log.debug("receiver process %d stopped pid=%d", number, os.getpid())


@dataclass
class _Receiver:
    """One receiver slot: its current process, pipe and last report."""

    number: int
    process: Any = None  # multiprocessing's SpawnProcess
    conn: Connection | None = None
    associations: int = 0
    totals: CounterTotals = field(default_factory=dict)


class ReceiverProcesses:
    """The node's receiver processes: started, watched (and started again), stopped, killed."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        log_setup: Callable[[], None] | None,
        identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.log_setup = log_setup
        self.identity = identity  # the spool's (`spool_identity`)
        self._receivers = [_Receiver(number) for number in range(2, count + 2)]
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the counters' deltas and the slots' processes
        self._watchers: list[threading.Thread] = []

    def start(self) -> None:
        """Start every receiver and wait until each listens; ConfigError if one cannot."""
        try:
            for receiver in self._receivers:
                self._spawn(receiver)
            for receiver in self._receivers:
                self._await_ready(receiver)
        except BaseException:
            self.kill()
            raise
        for receiver in self._receivers:
            watcher = threading.Thread(
                target=self._watch, args=(receiver,), name=f"receiver-{receiver.number}"
            )
            watcher.daemon = True
            watcher.start()
            self._watchers.append(watcher)

    def _spawn(self, receiver: _Receiver) -> None:
        ours, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=serve_receiver,
            args=(
                self.settings,
                receiver.number,
                theirs,
                self.log_setup,
                os.getpid(),
                self.identity,
            ),
            name=f"dicomnode-receiver-{receiver.number}",
            daemon=True,  # multiprocessing ends it if the node exits without stopping it
        )
        process.start()
        theirs.close()  # only the child's end stays open: its exit closes the pipe
        with self._lock:
            receiver.process, receiver.conn = process, ours
            receiver.associations, receiver.totals = 0, {}

    def _await_ready(self, receiver: _Receiver) -> None:
        assert receiver.conn is not None and receiver.process is not None
        message: tuple[Any, ...] = ("failed", f"not listening after {START_SECONDS:g} s")
        try:
            if receiver.conn.poll(START_SECONDS):
                message = receiver.conn.recv()
        except (EOFError, OSError):
            receiver.process.join(5)
            message = ("failed", f"exited with code {receiver.process.exitcode} (see above)")
        if message[0] != "ready":
            receiver.process.kill()
            receiver.process.join()
            raise ConfigError(
                f"receiver process {receiver.number} of node.listener_processes="
                f"{len(self._receivers) + 1} could not listen on port "
                f"{self.settings.node.port}: {message[1]}"
            )
        log.debug("receiver process %d listening pid=%d", receiver.number, message[1])

    def _watch(self, receiver: _Receiver) -> None:
        """Take its reports until it exits; then, unless the node stops, start it again."""
        delay = RESTART_DELAY_SECONDS[0]
        while True:
            started = time.monotonic()
            self._take_reports(receiver)
            process = receiver.process
            process.join()
            if time.monotonic() - started > STABLE_SECONDS:
                delay = RESTART_DELAY_SECONDS[0]  # not a crash loop: start it again soon
            # Waited first: a service manager's SIGTERM reaches every process, and the one that
            # reaches a receiver before the node must not look like a crash.
            if self._stopping.wait(delay):
                return
            log.warning(
                "receiver process %d (pid %d) exited with code %s; starting it again "
                "(connections it had accepted were lost; their senders send again)",
                receiver.number,
                process.pid,
                process.exitcode,
            )
            while (error := self._start_again(receiver)) is not None:
                delay = min(delay * 2, RESTART_DELAY_SECONDS[1])
                log.error("%s; trying again in %g s", error, delay)
                if self._stopping.wait(delay):
                    return
            delay = min(delay * 2, RESTART_DELAY_SECONDS[1])

    def _start_again(self, receiver: _Receiver) -> str | None:
        """None once it listens again, else why it could not."""
        try:
            self._spawn(receiver)
            self._await_ready(receiver)
        except ConfigError as exc:
            return str(exc)
        log.info("receiver process %d started again pid=%d", receiver.number, receiver.process.pid)
        if self._stopping.is_set():  # stop() ran while it started: it missed this one
            self._tell_stop(receiver)
        return None

    def _take_reports(self, receiver: _Receiver) -> None:
        assert receiver.conn is not None
        while True:
            try:
                _kind, associations, totals = receiver.conn.recv()
            except (EOFError, OSError):
                return
            with self._lock:
                add_receiver_totals(totals, receiver.totals)
                receiver.associations, receiver.totals = associations, totals

    def associations(self) -> int:
        """Open associations in the receiver processes, as last reported."""
        with self._lock:
            return sum(receiver.associations for receiver in self._receivers)

    def stop(self) -> None:
        """Tell every receiver to stop (each lets its associations finish); returns at once."""
        self._stopping.set()
        with self._lock:
            for receiver in self._receivers:
                self._tell_stop(receiver)

    @staticmethod
    def _tell_stop(receiver: _Receiver) -> None:
        if receiver.conn is not None:
            with contextlib.suppress(OSError):  # it is gone already
                receiver.conn.send(("stop",))

    def join(self) -> None:
        """Wait until every receiver exited (`stop()` first)."""
        for receiver in self._receivers:
            if receiver.process is not None:
                receiver.process.join()
        for watcher in self._watchers:
            watcher.join()

    def kill(self) -> None:
        """End every receiver now (a forced stop): what they were receiving is not answered."""
        self._stopping.set()
        with self._lock:
            for receiver in self._receivers:
                if receiver.process is not None and receiver.process.is_alive():
                    receiver.process.kill()
                    receiver.process.join()
