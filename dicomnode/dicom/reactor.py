"""pynetdicom's association reactor, made safe to share with the threads that send on it.

Each association has a reactor thread that takes what the peer sent off a message queue and
serves it. A thread that sends on the association (`send_c_store`, `send_n_event_report`,
`release`) first pauses the reactor: it clears `_reactor_checkpoint` and waits, without a bound,
until the flag `_is_paused` says the reactor stopped, then waits on the queue for its response.
Three ways this goes wrong in pynetdicom 3, each seen here or confirmed in its source:

- The pause is racy: the reactor can pass its checkpoint just before the sender clears it and then
  take the sender's response off the queue ("Received unexpected ... service message"): the
  sender waits out the DIMSE timeout (about once per 700 C-STOREs to DCMTK `storescp`).
- When the connection ends, pynetdicom queues `(None, None)`; a look at the queue that does not
  expect it kills the reactor thread with the flag false, and every later send waits for ever.
- An N-EVENT-REPORT is served on a thread of its own, which writes the flag True before and False
  after, whatever the reactor does: a sender goes on while the reactor runs, or waits for ever for
  a pause that already happened (pydicom/pynetdicom#820; a storage commitment delivery hung so).

`share_the_queue` and `own_the_pause` close them; `tune` applies both to an association.
"""

import queue
import threading
from typing import TypeAlias

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import DimseServiceType

# (context ID, message); pynetdicom defines its message type for type checkers only.
Taken: TypeAlias = "tuple[int | None, DimseServiceType | None]"


def share_the_queue(assoc: Association, wait_seconds: float) -> None:
    """Replace the reactor's look at the message queue (pynetdicom's non-blocking `get_msg`).

    It waits up to `wait_seconds` for a message (an acceptor serves a C-STORE as soon as it is
    decoded instead of after a 1 ms nap; 0: it only looks). While a send is under way (the
    checkpoint clear) it leaves a response, or the `(None, None)` that says the connection ended,
    at the head of the queue for the sender's own wait; requests it still takes and serves.
    With the checkpoint set it takes everything, as pynetdicom does.
    """
    dimse = assoc.dimse
    messages = getattr(dimse, "msg_queue", None)
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if not isinstance(messages, queue.Queue) or not isinstance(checkpoint, threading.Event):
        return  # a pynetdicom that is built otherwise: its races are its own again
    blocking = dimse.get_msg

    def get_msg(block: bool = False) -> Taken:
        if block:  # a sender's own wait for its response
            return blocking(block=True)
        with messages.not_empty:  # the queue's own lock and condition
            if not messages.queue and wait_seconds:
                messages.not_empty.wait(wait_seconds)
            if not messages.queue:
                return None, None
            _context, message = messages.queue[0]
            is_request = bool(getattr(message, "is_valid_request", False))
            if not checkpoint.is_set() and not is_request:
                return None, None  # a sender is waiting for this response (or end)
            taken: Taken = messages.queue.popleft()
            return taken

    dimse.get_msg = get_msg  # type: ignore[method-assign]


class _PauseOwnedByReactor(Association):
    """An Association whose `_is_paused` only its reactor thread writes; `kill()` reads as
    paused, from any thread, because a killed reactor never runs again."""

    @property  # type: ignore[override]  # an attribute in pynetdicom, a property here
    def _is_paused(self) -> bool:
        return bool(self.__dict__.get("_is_paused", False) or self.__dict__.get("_kill", False))

    @_is_paused.setter
    def _is_paused(self, value: bool) -> None:
        if threading.current_thread() is self:  # the Association is its reactor's thread
            self.__dict__["_is_paused"] = value


def own_the_pause(assoc: Association) -> None:
    """Let only the reactor say whether it is paused (writes from other threads are ignored)."""
    if type(assoc) is Association and "_is_paused" in assoc.__dict__:
        assoc.__class__ = _PauseOwnedByReactor


def tune(assoc: Association, wait_seconds: float) -> None:
    own_the_pause(assoc)
    share_the_queue(assoc, wait_seconds)
