"""How `dicomnode serve` and `dicomnode worker` stop: the first SIGINT/SIGTERM stops cleanly,
within a bound; a second one (or the bound) exits at once, and the log says what that costs.

A clean stop lets the associations, jobs and deliveries in progress finish
(`Node.stop`), which can take as long as a sender takes to finish its association or a job its
enhancement. `node.stop_timeout_seconds` bounds that wait; an admin in a hurry presses Ctrl-C
again.
"""

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicomnode.config import Settings
    from dicomnode.node import Node

log = logging.getLogger(__name__)

EXIT_FORCED = 1
SIGNAL_POLL_SECONDS = 0.5  # the longest a signal waits for the main thread to notice it


class StopSignals:
    """Counts SIGINT and SIGTERM from the moment it is made (install it before the node starts)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.arrived = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only record here: a handler runs between two bytecodes of the main thread, which may
        # hold the logging lock.
        self.received.append(signal.Signals(signum).name)
        self.arrived.set()


def _waiting_for(node: "Node") -> str:
    associations, jobs = node.in_progress()
    return f"{associations} association(s) receiving and {jobs} job(s) in progress"


def _forced_cost(settings: "Settings") -> str:
    return (
        "jobs in progress resume when this host's node starts again (elsewhere once their "
        f"lease lapses, worker.lease_seconds={settings.worker.lease_seconds:g}); instances being "
        "received were not acknowledged (their senders send them again)"
    )


def run_until_stopped(node: "Node", settings: "Settings", signals: StopSignals) -> None:
    """Block until a signal, then stop the node: return once it stopped cleanly, or exit the
    process with code 1 (a second signal, or node.stop_timeout_seconds passed)."""
    # Timed: the kernel may hand a process's signal to any of its threads, and Python then runs
    # the handler on the main thread only when that thread next runs bytecode; an untimed wait
    # would not, and SIGTERM would go unheard.
    while not signals.arrived.wait(SIGNAL_POLL_SECONDS):
        pass
    first = signals.received[0]
    timeout = settings.node.stop_timeout_seconds
    log.info(
        "stopping (%s): waiting up to %g s (node.stop_timeout_seconds) for %s; %s again exits "
        "at once (jobs in progress resume at the next start; instances being received are not "
        "acknowledged)",
        first,
        timeout,
        _waiting_for(node),
        "Ctrl-C" if first == "SIGINT" else first,
    )
    stopped = threading.Event()

    def stop() -> None:
        try:
            node.stop()
        except Exception:
            log.exception("stopping the node failed")
        finally:
            stopped.set()

    threading.Thread(target=stop, name="stop", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not stopped.wait(0.1):
        if len(signals.received) > 1:
            why = f"second {signals.received[1]}"
        elif time.monotonic() >= deadline:
            why = f"still waiting after {timeout:g} s (node.stop_timeout_seconds)"
        else:
            continue
        log.warning("forced exit (%s) with %s: %s", why, _waiting_for(node), _forced_cost(settings))
        node.kill_receivers()
        logging.shutdown()
        # Not sys.exit: the threads still working would keep the process alive, and exit
        # handlers would wait for them.
        os._exit(EXIT_FORCED)
