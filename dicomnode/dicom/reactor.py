"""pynetdicom's association reactor, made safe to share with the threads that send on it.

Each association has a reactor thread that takes what the peer sent off a message queue and
serves it. A thread that sends on the association (`send_c_store`, `send_n_event_report`,
`release`) first pauses the reactor: it clears `_reactor_checkpoint` and waits, without a bound,
until the flag `_is_paused` says the reactor stopped, then waits on the queue for its response.
Five ways this goes wrong in pynetdicom 3, each seen here or confirmed in its source:

- The pause is racy: the reactor can pass its checkpoint just before the sender clears it and then
  take the sender's response off the queue ("Received unexpected ... service message"): the
  sender waits out the DIMSE timeout (about once per 700 C-STOREs to DCMTK `storescp`).
- When the connection ends, pynetdicom queues `(None, None)`; a look at the queue that does not
  expect it kills the reactor thread with the flag false, and every later send waits for ever.
- An N-EVENT-REPORT is served on a thread of its own, which writes the flag True before and False
  after, whatever the reactor does: a sender goes on while the reactor runs, or waits for ever for
  a pause that already happened (pydicom/pynetdicom#820; a storage commitment delivery hung so).
- The sender's wait takes the first message that comes, a request too: a C-ECHO that a modality
  sends while our storage commitment report waits for its answer is read as that answer, found
  invalid, and the association aborted.
- A modality that asks to release while our report waits for its answer gets no release answer
  (the reactor is paused) and rarely an answer to the report (pynetdicom's own cannot send one
  then): both sides wait out their timeouts and the association ends in an abort.

And one of sending: a message goes to the DUL thread one P-DATA fragment at a time, as it is
encoded. Between two fragments the DUL thread may find its queue empty and read the socket, and
the store lane (`receive/store_lane.py`) answers a C-STORE there, straight onto the wire: the
response lands inside our report, or another sender's fragments inside it (PS3.7 8.1 forbids
both).

`share_the_queue` (with the sender's wait, which gives up when the peer asks to release),
`own_the_pause` and `send_whole_messages` close them; `tune` applies all three to an association.
`once_queued` lets an EVT_DIMSE_SENT handler start a follow-up only once the message is queued.
"""

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeAlias

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import DimseServiceType
from pynetdicom.pdu_primitives import A_RELEASE, P_DATA

# (context ID, message); pynetdicom defines its message type for type checkers only.
Taken: TypeAlias = "tuple[int | None, DimseServiceType | None]"

# How often a sender waiting for its response looks whether the peer asked to release.
RELEASE_LOOK_SECONDS = 0.05


class ReleaseRequested(RuntimeError):
    """The peer asked to release the association while our request waited for its answer: the
    send is given up and the reactor answers the release (a RuntimeError, as pynetdicom's
    `send_*` raise when the association is gone)."""


def share_the_queue(assoc: Association, wait_seconds: float) -> None:
    """Replace the reactor's look at the message queue (pynetdicom's non-blocking `get_msg`).

    It waits up to `wait_seconds` for a message (an acceptor serves a C-STORE as soon as it is
    decoded instead of after a 1 ms nap; 0: it only looks). While a send is under way (the
    checkpoint clear) it leaves a response, or the `(None, None)` that says the connection ended,
    at the head of the queue for the sender's own wait; requests it still takes and serves.
    With the checkpoint set it takes everything, as pynetdicom does. The sender's wait (a
    blocking `get_msg`) takes the first response or end, and leaves requests to the reactor.
    """
    dimse = assoc.dimse
    messages = getattr(dimse, "msg_queue", None)
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if not isinstance(messages, queue.Queue) or not isinstance(checkpoint, threading.Event):
        return  # a pynetdicom that is built otherwise: its races are its own again

    # Only a requestor releases (PS3.8 7.2): our senders on associations we requested release
    # them themselves afterwards, which would race the reactor's answer, so they never give up.
    def releasing() -> bool:
        return bool(assoc.is_acceptor) and _releasing(assoc)

    def get_msg(block: bool = False) -> Taken:
        if block:  # a sender's own wait for its response
            try:
                return _take_response(messages, dimse.dimse_timeout, releasing)
            except ReleaseRequested:
                checkpoint.set()  # the reactor answers the release; the sender learns why
                raise
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


def _take_response(
    messages: "queue.Queue[Taken]", timeout: float | None, releasing: Callable[[], bool]
) -> Taken:
    """The first response in the queue, or the `(None, None)` of the connection's end, waiting
    up to `timeout` seconds (None: without a bound, as pynetdicom's `dimse_timeout` allows);
    requests ahead of it stay queued, in order, for the reactor once the send is over.
    ReleaseRequested when `releasing()` says the peer asked to release meanwhile."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with messages.not_empty:
        while True:
            for index, (context, message) in enumerate(messages.queue):
                if not getattr(message, "is_valid_request", False):
                    del messages.queue[index]
                    return context, message
            if releasing():
                raise ReleaseRequested("the peer asked to release the association")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None, None
            messages.not_empty.wait(min(remaining or RELEASE_LOOK_SECONDS, RELEASE_LOOK_SECONDS))


def _releasing(assoc: Association) -> bool:
    """The peer's A-RELEASE-RQ is waiting for the reactor (looked at, not taken: pynetdicom's
    `is_release_requested` takes it)."""
    primitive = assoc.dul.peek_next_pdu()
    return isinstance(primitive, A_RELEASE) and primitive.result is None


# On a thread inside a whole-message send: what to run once that message is queued.
_queueing = threading.local()


def once_queued(callback: Callable[[], None]) -> None:
    """Run `callback` once the message this thread is sending is queued whole for the DUL thread.

    pynetdicom fires EVT_DIMSE_SENT before it encodes the message: a handler that sends a
    follow-up from another thread (a storage commitment report after its N-ACTION response)
    starts that thread from here, so the follow-up's fragments queue behind the message's and
    the wire order is the order of sending. Outside such a send (an association that
    `send_whole_messages` did not tune) it runs at once."""
    waiting: list[Callable[[], None]] | None = getattr(_queueing, "callbacks", None)
    if waiting is None:
        callback()
    else:
        waiting.append(callback)


def send_whole_messages(assoc: Association) -> None:
    """Hand each DIMSE message to the DUL thread whole: its P-DATA fragments are encoded first,
    then queued in one step, so the DUL thread (which sends everything queued before it reads
    the socket again) writes them back to back. A message that fails to encode sends nothing.
    Memory: the whole message is held once before its first byte goes out; as encoding usually
    outran the socket, its fragments mostly queued up so before too."""
    dimse, dul = assoc.dimse, assoc.dul
    provider = getattr(dul, "to_provider_queue", None)
    if not isinstance(provider, queue.Queue):
        return  # a pynetdicom that is built otherwise
    collecting = threading.local()
    send_pdu, send_msg = dul.send_pdu, dimse.send_msg

    def hold_fragments(primitive: object) -> None:
        held: list[P_DATA] | None = getattr(collecting, "held", None)
        if held is not None and isinstance(primitive, P_DATA):
            held.append(primitive)
        else:
            send_pdu(primitive)  # type: ignore[arg-type]

    def send_whole(primitive: DimseServiceType, context_id: int) -> None:
        collecting.held = held = []
        outer = getattr(_queueing, "callbacks", None)
        _queueing.callbacks = after = []
        try:
            send_msg(primitive, context_id)  # pynetdicom's: events, encoding, fragments
        finally:
            collecting.held = None
            _queueing.callbacks = outer
        with provider.mutex:  # Queue.put, for all fragments at once
            provider.queue.extend(held)
            provider.unfinished_tasks += len(held)
            provider.not_empty.notify()
        wake = getattr(dul.socket, "wake", None)  # dicom/waking.py's DUL sleeps on its socket
        if callable(wake):
            wake()
        for callback in after:  # none when the message failed to encode: it was never sent
            callback()

    dul.send_pdu = hold_fragments  # type: ignore[method-assign]
    dimse.send_msg = send_whole  # type: ignore[method-assign]


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
    send_whole_messages(assoc)
