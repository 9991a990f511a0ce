"""Releasing an association we requested: after the peer's reports are handled, and never
waiting without a bound.

`Association.release()` sends the A-RELEASE-RQ as soon as the reactor is paused, even while
pynetdicom is still serving an N-EVENT-REPORT on its own thread (the report's response would then
follow our release request), and it waits for that pause without a bound. `dicom/reactor.py`
keeps the report thread from writing the pause flag (pydicom/pynetdicom#820, which hung a storage
commitment delivery with its report recorded); here the report threads are waited for first, the
pause is waited for a bounded time, and an abort replaces a hang should the flag never turn.
Neither releases an association an abort was sent on (`abort_sent`), ours or the reactor's.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.events import Event

log = logging.getLogger(__name__)

_PAUSE_POLL_SECONDS = 0.0005


class ReportThreads:
    """The threads pynetdicom served the peer's N-EVENT-REPORTs on, to be waited for before
    releasing: `tracked(handler)` is the EVT_N_EVENT_REPORT handler to bind."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def tracked(self, handler: Callable[[Event], Any]) -> Callable[[Event], Any]:
        def serve(event: Event) -> Any:
            with self._lock:
                self._threads.append(threading.current_thread())
            return handler(event)

        return serve

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            threads = [
                thread for thread in self._threads if thread is not threading.current_thread()
            ]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def abort_sent(assoc: Association) -> bool:
    """True once an A-ABORT was sent on `assoc`, by a sender or by pynetdicom's reactor (on a
    network timeout, which with equal timeouts fires as a sender's wait for a response ends).
    `is_established` stays True until the reactor has seen that abort: an A-RELEASE-RQ then is
    an event the state machine refuses in Sta13 (an uncaught exception in the DUL thread) and
    a wait of acse_timeout for an answer that never comes."""
    return bool(getattr(assoc, "_sent_abort", False) or assoc.is_aborted)


def end(assoc: Association) -> None:
    """pynetdicom's release of `assoc` when it is still open: not after an abort, a sender's or
    the reactor's (`abort_sent`), which pynetdicom has not yet told `is_established` of."""
    if assoc.is_established and not abort_sent(assoc):
        assoc.release()


def release(assoc: Association, wait_seconds: float, reports: ReportThreads | None = None) -> None:
    """Release `assoc`, or abort it if its reactor is not paused within `wait_seconds` (after
    `reports`' threads ended, waited for up to as long)."""
    if reports is not None:
        reports.wait(wait_seconds)
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if not isinstance(checkpoint, threading.Event) or not hasattr(assoc, "_is_paused"):
        end(assoc)  # a pynetdicom built otherwise: its own release
        return
    if not assoc.is_established or abort_sent(assoc):
        return
    checkpoint.clear()  # the reactor stops at its checkpoint, leaving the A-RELEASE-RP to us
    deadline = time.monotonic() + wait_seconds
    while not assoc._is_paused:
        if time.monotonic() >= deadline:
            log.warning(
                "association with %s aborted: it could not be released (its reactor did not "
                "pause within %g s)",
                assoc.acceptor.ae_title,
                wait_seconds,
            )
            assoc.abort()
            return
        time.sleep(_PAUSE_POLL_SECONDS)
    if abort_sent(assoc):  # the reactor's own, before it paused
        checkpoint.set()
        return
    # What Association.release() does once paused; called here so that no second unbounded wait
    # follows this bounded one.
    assoc.acse.negotiate_release()
    checkpoint.set()
