"""pynetdicom's DUL thread, asleep until there is something to do.

pynetdicom's DUL thread looks at its socket and its queues in a loop that sleeps a fixed delay
(`dicom/association.py`: 0.2 ms) whenever it found nothing: every open association wakes its
thread thousands of times a second whether data comes or not. With four senders that was
~23,000 context switches a second in one node process, fighting the receive threads for the
interpreter lock. Here the DUL's look at its socket (`ready`) waits on the socket itself and on
a wake-up pair, which is signalled by every put on the DUL's queues from another thread (a
response to send, an event) and by a kill: the thread sleeps until a PDU arrives or it has
something to send, and at most `WAIT_SECONDS`, so its timers (ARTIM) are still looked at.
"""

import contextlib
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

# The longest a DUL thread waits for its socket: the latency of anything not signalled.
WAIT_SECONDS = 0.05
_STATE_CLOSING = "Sta13"  # awaiting the transport close: pynetdicom reads what is left, then closes


class WakingSocket(AssociationSocket):
    """An AssociationSocket whose `ready` waits for data or a wake-up instead of polling."""

    _wake_receiver: socket.socket
    _wake_sender: socket.socket

    # Held while bytes are written: the DUL thread's PDUs and a sender's own
    # (forward/send_lane.py) reach the wire whole, never one inside the other.
    sending: threading.Lock

    def install_wakeup(self) -> None:
        """Make every hand-off to this association's DUL thread wake it (before it starts)."""
        self.sending = threading.Lock()
        self._wake_receiver, self._wake_sender = socket.socketpair()
        self._wake_receiver.setblocking(False)
        self._wake_sender.setblocking(False)
        dul = self.assoc.dul
        for handoff in (dul.event_queue, dul.to_provider_queue):
            handoff.put = self._waking(dul, handoff.put)  # type: ignore[method-assign]
        dul.kill_dul = self._waking(dul, dul.kill_dul)  # type: ignore[method-assign]

    def _waking(self, dul: DULServiceProvider, call: Callable[..., None]) -> Callable[..., None]:
        def call_and_wake(*args: object, **kwargs: object) -> None:
            call(*args, **kwargs)
            if threading.current_thread() is not dul:  # its own puts: it is awake already
                self.wake()

        return call_and_wake

    def send(self, bytestream: bytes) -> None:
        with self.sending:
            super().send(bytestream)

    def wake(self) -> None:
        """Interrupt the DUL thread's wait (a closed pair: it no longer waits)."""
        with contextlib.suppress(OSError):  # full (already signalled) or closed
            self._wake_sender.send(b"\0")

    @property
    def ready(self) -> bool:
        """True when data can be read; waits up to WAIT_SECONDS for it or for a wake-up."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes that select cannot see
        dul = self.assoc.dul
        busy = (
            dul.state_machine.current_state == _STATE_CLOSING
            or _queued(dul.event_queue)
            or _queued(dul.to_provider_queue)
        )
        try:
            readable, _, _ = select.select(
                [sock, self._wake_receiver], [], [], 0 if busy else WAIT_SECONDS
            )
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom does
            return False
        if self._wake_receiver in readable:
            with contextlib.suppress(OSError):
                while self._wake_receiver.recv(4096):
                    pass
        return sock in readable

    def close(self) -> None:
        super().close()
        for end in (getattr(self, "_wake_receiver", None), getattr(self, "_wake_sender", None)):
            if end is not None:
                end.close()


def _queued(handoff: "queue.Queue[Any]") -> bool:
    return bool(handoff.queue)
