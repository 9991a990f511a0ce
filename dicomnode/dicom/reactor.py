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
encoded, unlocked. Another thread's message can be queued between two fragments; and between two
fragments the DUL thread may find its queue empty and read the socket, where the store lane
(`receive/store_lane.py`) answers a C-STORE straight onto the wire: either lands inside our
message (PS3.7 8.1 forbids both).

`share_the_queue` (with the sender's wait, which gives up when the peer asks to release),
`own_the_pause` and `send_messages_in_order` close them; `tune` applies all three to an
association. `once_queued` lets an EVT_DIMSE_SENT handler start a follow-up only once the
message is queued.
"""

import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TypeAlias

from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import DimseServiceType
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import A_RELEASE, P_DATA

# (context ID, message); pynetdicom defines its message type for type checkers only.
Taken: TypeAlias = "tuple[int | None, DimseServiceType | None]"

# How often a waiting sender looks again at what no notification tells it: whether the peer
# asked to release, whether the DUL thread ended.
LOOK_SECONDS = 0.05


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

    def ended() -> bool:  # aborted or killed: the reactor may have taken the end's (None, None)
        return bool(assoc.is_aborted or getattr(assoc, "_kill", False))

    def get_msg(block: bool = False) -> Taken:
        if block:  # a sender's own wait for its response
            try:
                return _take_response(messages, dimse.dimse_timeout, releasing, ended)
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
    messages: "queue.Queue[Taken]",
    timeout: float | None,
    releasing: Callable[[], bool],
    ended: Callable[[], bool],
) -> Taken:
    """The first response in the queue, or the `(None, None)` of the connection's end, waiting
    up to `timeout` seconds (None: without a bound, as pynetdicom's `dimse_timeout` allows);
    requests ahead of it stay queued, in order, for the reactor once the send is over.
    ReleaseRequested when `releasing()` says the peer asked to release meanwhile; `(None, None)`
    as soon as `ended()` says the association is gone (its answer can no longer come)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with messages.not_empty:
        while True:
            for index, (context, message) in enumerate(messages.queue):
                if not getattr(message, "is_valid_request", False):
                    del messages.queue[index]
                    return context, message
            if ended():
                return None, None
            if releasing():
                raise ReleaseRequested("the peer asked to release the association")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None, None
            messages.not_empty.wait(min(remaining or LOOK_SECONDS, LOOK_SECONDS))


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
    the wire order is the order of sending. On an association we accepted it runs under the
    DUL queue's lock, before the first fragment can leave, so that the follow-up is under way
    before the peer can answer or leave: it must be quick (start a thread) and must not touch
    that queue. Outside such a send (an association that `send_messages_in_order` did not
    tune) it runs at once."""
    waiting: list[Callable[[], None]] | None = getattr(_queueing, "callbacks", None)
    if waiting is None:
        callback()
    else:
        waiting.append(callback)


def send_messages_in_order(assoc: Association) -> None:
    """Send each DIMSE message's P-DATA fragments back to back, never mixed with another
    message's (PS3.7 8.1), whichever threads send on the association.

    On an association we accepted, the store lane writes C-STORE responses straight onto the
    wire whenever the DUL thread reads the socket, which it does as soon as its queue is empty:
    there a message is sent whole (`_send_whole`). Messages sent there are small (responses and
    storage commitment reports). On an association we requested nothing writes past the queue,
    and the message may be a C-STORE of gigabytes: it streams from its file, one fragment after
    the other, under the association's own send lock (`_send_in_turn`)."""
    if not isinstance(getattr(assoc.dul, "to_provider_queue", None), queue.Queue):
        return  # a pynetdicom that is built otherwise
    if assoc.is_acceptor:
        _send_whole(assoc)
    else:
        _send_in_turn(assoc)


def _send_whole(assoc: Association) -> None:
    """Encode all of a message's fragments first, then queue them in one step: the DUL thread
    sends everything queued before it reads the socket again. A message that fails to encode
    sends nothing. The whole message is held once before its first byte goes out."""
    dimse, dul = assoc.dimse, assoc.dul
    provider = dul.to_provider_queue
    collecting = threading.local()
    send_pdu, send_msg = dul.send_pdu, dimse.send_msg

    def hold_fragments(primitive: object) -> None:
        held: list[P_DATA] | None = getattr(collecting, "held", None)
        if held is not None and isinstance(primitive, P_DATA):
            held.append(primitive)
        else:
            send_pdu(primitive)  # type: ignore[arg-type]

    def send_whole(primitive: DimseServiceType, context_id: int) -> None:
        outer = getattr(collecting, "held", None)  # a message whose EVT_DIMSE_SENT sends this
        collecting.held = held = []
        with _callbacks_once_queued() as after:
            try:
                send_msg(primitive, context_id)  # pynetdicom's: events, encoding, fragments
            finally:
                collecting.held = outer
            with provider.mutex:  # Queue.put, for all fragments at once
                provider.queue.extend(held)
                provider.unfinished_tasks += len(held)
                provider.not_empty.notify()
                # Before the DUL thread can take the first fragment, so before the peer can
                # answer or leave: what follows the message is under way when the peer sees it.
                # None when the message failed to encode: it was never sent.
                for callback in after:
                    callback()
            wake = getattr(dul.socket, "wake", None)  # dicom/waking.py's DUL sleeps on its socket
            if callable(wake):
                wake()

    dul.send_pdu = hold_fragments  # type: ignore[method-assign]
    dimse.send_msg = send_whole  # type: ignore[method-assign]


# A sender on an association we requested queues at most this many P-DATA fragments ahead of
# the DUL thread, each at most FRAGMENT_BYTES long whatever the peer would take (PS3.8 9.3.1: a
# PDU may be shorter than the receiver's maximum; 0 there means none): 8 MiB at the very most,
# 512 KiB at the 16 KiB that DCMTK and Orthanc announce.
FRAGMENTS_AHEAD = 32
FRAGMENT_BYTES = 256 * 1024


class _ShortFragments(DIMSEServiceProvider):
    """A DIMSE provider that encodes P-DATA of at most FRAGMENT_BYTES."""

    @property
    def maximum_pdu_size(self) -> int:
        peers = super().maximum_pdu_size
        return FRAGMENT_BYTES if peers == 0 else min(peers, FRAGMENT_BYTES)


class _ConnectionClosed(Exception):
    """Breaks off pynetdicom's encoding of a message nobody would send any more."""


def _send_in_turn(assoc: Association) -> None:
    """One message at a time per association, each queued fragment by fragment as it is encoded
    and at most FRAGMENTS_AHEAD ahead of the DUL thread, so a large C-STORE is read from its
    file as it goes out, never held whole; a release waits for the message under way.

    The wait for room lasts while the DUL thread runs: a peer that stops reading ends it after
    `network.network_timeout` (the socket's write timeout, dicom/association.py), and the send
    ends as pynetdicom's does when the connection is lost, with no response. A message broken
    off after its first fragment (its file could not be read) leaves the association unusable:
    it is aborted, and the error raised.
    """
    dimse, dul = assoc.dimse, assoc.dul
    provider = dul.to_provider_queue
    turn = threading.RLock()  # reentrant: an EVT_DIMSE_SENT handler may send in turn
    counting = threading.local()
    send_pdu, send_msg = dul.send_pdu, dimse.send_msg

    def queue_with_room(primitive: object) -> None:
        if getattr(counting, "queued", None) is not None and isinstance(primitive, P_DATA):
            _wait_for_room(dul, provider)
            counting.queued += 1
        if isinstance(primitive, A_RELEASE):  # not between a message's fragments (PS3.8 Sta7)
            with turn:
                send_pdu(primitive)
        else:  # an abort goes at once: it may break off a message
            send_pdu(primitive)  # type: ignore[arg-type]

    def abort() -> None:  # the reactor cannot wait for its own end
        assoc.abort(block=threading.current_thread() is not assoc)

    def send_in_turn(primitive: DimseServiceType, context_id: int) -> None:
        with turn, _callbacks_once_queued() as after:
            outer = getattr(counting, "queued", None)  # fragments queued of this message
            counting.queued = 0
            try:
                send_msg(primitive, context_id)  # pynetdicom's: events, encoding, fragments
            except _ConnectionClosed:
                # as when the connection closes after a message: a sender's wait for its
                # response ends with none (pynetdicom's empty Dataset), the caller retries
                after.clear()
                abort()
            except BaseException:
                if counting.queued:  # half a message on its way: only an abort ends it cleanly
                    abort()
                raise
            finally:
                counting.queued = outer
        for callback in after:
            callback()

    if type(dimse) is DIMSEServiceProvider:
        dimse.__class__ = _ShortFragments
    dul.send_pdu = queue_with_room  # type: ignore[method-assign]
    dimse.send_msg = send_in_turn  # type: ignore[method-assign]
    _turns[assoc] = turn


# The turn of each association `_send_in_turn` tuned: a sender that writes a message itself
# (forward/send_lane.py) holds it as pynetdicom's sends do.
_turns: "weakref.WeakKeyDictionary[Association, threading.RLock]" = weakref.WeakKeyDictionary()


def turn_of(assoc: Association) -> "threading.RLock | None":
    """The lock a message holds while it is sent on `assoc`, an association we requested;
    None where `send_messages_in_order` did not tune it."""
    return _turns.get(assoc)


def _wait_for_room(dul: DULServiceProvider, provider: "queue.Queue[object]") -> None:
    """Until fewer than FRAGMENTS_AHEAD fragments wait for the DUL thread (its `get` notifies
    `not_full`); _ConnectionClosed when the DUL thread ends first."""
    with provider.not_full:
        while len(provider.queue) >= FRAGMENTS_AHEAD:
            if dul._kill_thread or not dul.is_alive():
                raise _ConnectionClosed
            provider.not_full.wait(LOOK_SECONDS)  # woken by a `get`; looks anyway


@contextlib.contextmanager
def _callbacks_once_queued() -> Iterator[list[Callable[[], None]]]:
    """Collect this thread's `once_queued` callbacks while a message is being queued."""
    outer = getattr(_queueing, "callbacks", None)
    _queueing.callbacks = after = []
    try:
        yield after
    finally:
        _queueing.callbacks = outer


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
    send_messages_in_order(assoc)
