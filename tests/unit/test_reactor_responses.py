"""The reactor of an association leaves a response to the `send_*` waiting for it, survives the
end of its connection, and alone says whether it is paused; the sender's wait leaves requests to
the reactor; on an acceptor each message reaches the DUL thread whole, on a requestor it streams
a bounded way ahead, never mixed with another (dicomnode/dicom/reactor.py).

pynetdicom's reactor can slip past the pause a `send_*` asks of it and take that sender's response
off the queue ("Received unexpected C-STORE service message"): the sender then waits out the
DIMSE timeout and the delivery fails (about once per 700 C-STOREs to DCMTK `storescp` here).
`dicom/reactor.py` makes the reactor's look at the queue skip a response while a send is
under way. These tests drive that look on pynetdicom's own Association and DIMSE primitives; the
integration test (tests/integration/test_forwarding_tuning.py) checks that real associations
get it.
"""

import contextlib
import queue
import threading
import time
from io import BytesIO

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_STORE, N_EVENT_REPORT
from pynetdicom.pdu_primitives import A_RELEASE

from dicomnode.dicom.reactor import (
    FRAGMENT_BYTES,
    FRAGMENTS_AHEAD,
    ReleaseRequested,
    once_queued,
    own_the_pause,
    send_messages_in_order,
    share_the_queue,
    tune,
)

COMMITMENT = "1.2.840.10008.1.20.1"


def store_response(message_id: int) -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.Status = 0x0000
    return response


def event_report() -> N_EVENT_REPORT:
    request = N_EVENT_REPORT()
    request.MessageID = 7
    request.AffectedSOPClassUID = COMMITMENT
    request.AffectedSOPInstanceUID = f"{COMMITMENT}.1"
    request.EventTypeID = 1
    return request


@pytest.fixture
def assoc() -> Association:
    made = Association(AE(), "requestor")  # not started: no thread, no socket
    share_the_queue(made, 0)
    return made


def test_while_a_send_is_under_way_the_reactor_leaves_its_response(assoc: Association) -> None:
    response = store_response(1)
    assoc._reactor_checkpoint.clear()  # what send_c_store does before it sends
    assoc.dimse.msg_queue.put((1, response))

    assert assoc.dimse.get_msg(block=False) == (None, None)  # the reactor's look
    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert assoc.dimse.get_msg(block=True) == (1, response)  # the sender's wait


def test_while_a_send_is_under_way_the_reactor_still_serves_requests(
    assoc: Association,
) -> None:
    request = event_report()
    assoc._reactor_checkpoint.clear()
    assoc.dimse.msg_queue.put((3, request))

    assert assoc.dimse.get_msg(block=False) == (3, request)
    assert assoc.dimse.msg_queue.empty()


def test_a_response_nobody_waits_for_is_taken_as_before(assoc: Association) -> None:
    stale = store_response(9)  # e.g. one that came after its sender gave up
    assert assoc._reactor_checkpoint.is_set()  # no send under way
    assoc.dimse.msg_queue.put((1, stale))

    assert assoc.dimse.get_msg(block=False) == (1, stale)
    assert assoc.dimse.get_msg(block=False) == (None, None)


def test_without_the_change_the_reactor_takes_the_senders_response() -> None:
    """The race this guards against is pynetdicom's own: its look takes whatever is there."""
    plain = Association(AE(), "requestor")
    plain._reactor_checkpoint.clear()
    plain.dimse.msg_queue.put((1, store_response(1)))

    context, taken = plain.dimse.get_msg(block=False)
    assert context == 1 and taken is not None and not taken.is_valid_request


def test_the_end_of_the_connection_is_left_to_the_sender_and_never_kills_the_reactor(
    assoc: Association,
) -> None:
    # pynetdicom queues (None, None) when the peer aborts or the connection drops; reading it as
    # a message killed the reactor thread, and every later send waited for ever for its pause.
    assoc._reactor_checkpoint.clear()  # a send under way
    assoc.dimse.msg_queue.put((None, None))

    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert assoc.dimse.msg_queue.qsize() == 1  # left for the sender, who learns of the end
    assert assoc.dimse.get_msg(block=True) == (None, None)

    assoc._reactor_checkpoint.set()  # no send under way: taken, as pynetdicom does
    assoc.dimse.msg_queue.put((None, None))
    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert assoc.dimse.msg_queue.empty()


def test_an_acceptor_waits_for_a_message_yet_leaves_a_response_to_its_sender() -> None:
    acceptor = Association(AE(), "acceptor")
    share_the_queue(acceptor, 0.05)
    response = N_EVENT_REPORT()  # e.g. a modality's answer to the report we sent it
    response.MessageIDBeingRespondedTo = 1
    response.Status = 0x0000
    acceptor._reactor_checkpoint.clear()
    acceptor.dimse.msg_queue.put((1, response))

    assert acceptor.dimse.get_msg(block=False) == (None, None)
    assert acceptor.dimse.get_msg(block=True) == (1, response)

    request = event_report()  # arrives while the reactor waits: served at once
    threading.Timer(0.01, acceptor.dimse.msg_queue.put, args=((3, request),)).start()
    acceptor._reactor_checkpoint.set()
    assert acceptor.dimse.get_msg(block=False) == (3, request)


def test_only_the_reactor_thread_says_whether_it_is_paused() -> None:
    made = Association(AE(), "requestor")
    tune(made, 0)
    made._is_paused = True  # e.g. pynetdicom's thread serving an N-EVENT-REPORT, in and out
    assert made._is_paused is False
    # The reactor runs on the Association's own thread: its writes count.
    made.run = lambda: setattr(made, "_is_paused", True)  # type: ignore[method-assign]
    made.start()
    made.join(5)
    assert made._is_paused is True
    made.run = lambda: setattr(made, "_is_paused", False)  # type: ignore[method-assign]
    threading.Thread(target=setattr, args=(made, "_is_paused", True)).start()
    time.sleep(0.05)
    assert made._is_paused is True  # still the reactor's last word


def test_a_killed_association_reads_as_paused_whoever_asks() -> None:
    made = Association(AE(), "requestor")
    own_the_pause(made)
    made._kill = True
    assert made._is_paused is True


def echo_request(message_id: int) -> C_ECHO:
    request = C_ECHO()
    request.MessageID = message_id
    request.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return request


def test_the_senders_wait_leaves_requests_to_the_reactor(assoc: Association) -> None:
    # A modality's C-ECHO that arrives while our commitment report waits for its answer: taken
    # by that wait, pynetdicom reads it as an invalid answer and aborts the association.
    echo, answer = echo_request(5), store_response(1)
    assoc._reactor_checkpoint.clear()  # a send under way
    assoc.dimse.msg_queue.put((3, echo))
    threading.Timer(0.05, assoc.dimse.msg_queue.put, args=((1, answer),)).start()

    assert assoc.dimse.get_msg(block=True) == (1, answer)  # the sender's wait
    assoc._reactor_checkpoint.set()  # the send is over
    assert assoc.dimse.get_msg(block=False) == (3, echo)  # the reactor's look serves it


def test_the_senders_wait_ends_at_the_dimse_timeout_with_only_requests_queued(
    assoc: Association,
) -> None:
    assoc.dimse_timeout = 0.2
    echo = echo_request(5)
    assoc._reactor_checkpoint.clear()
    assoc.dimse.msg_queue.put((3, echo))

    started = time.monotonic()
    assert assoc.dimse.get_msg(block=True) == (None, None)  # no answer: pynetdicom aborts
    assert 0.15 < time.monotonic() - started < 5
    assert list(assoc.dimse.msg_queue.queue) == [(3, echo)]


def test_the_senders_wait_gives_up_when_the_peer_asks_to_release() -> None:
    # A modality releasing while our report waits for its answer: the reactor must answer the
    # release (it takes the A-RELEASE-RQ), not wait, paused, for an answer that will not come.
    assoc = Association(AE(), "acceptor")
    share_the_queue(assoc, 0)
    assoc._reactor_checkpoint.clear()
    threading.Timer(0.05, assoc.dul.to_user_queue.put, args=(A_RELEASE(),)).start()

    with pytest.raises(ReleaseRequested):
        assoc.dimse.get_msg(block=True)
    assert assoc._reactor_checkpoint.is_set()  # the reactor runs again
    assert assoc.acse.is_release_requested()  # and finds the request there


def large_event_report() -> N_EVENT_REPORT:
    request = event_report()
    request.EventInformation = BytesIO(bytes(200_000))  # ~50 P-DATA fragments at 4 KB
    return request


def dul_gaps(made: Association, send: "threading.Thread") -> tuple[int, list[int]]:
    """Act as the DUL thread while `send` runs: take each queued fragment and note after how
    many the queue was empty (when pynetdicom's DUL thread would read the socket instead)."""
    provider = made.dul.to_provider_queue
    taken, gaps = 0, []
    send.start()
    while send.is_alive() or not provider.empty():
        try:
            provider.get(timeout=0.01)
        except queue.Empty:
            continue
        taken += 1
        if provider.empty():
            gaps.append(taken)
    send.join()
    return taken, gaps


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "pynetdicom"])
def test_a_message_reaches_the_dul_thread_whole(whole: bool) -> None:
    made = Association(AE(), "acceptor")  # not started: no thread, no socket
    made.requestor.maximum_length = 4096  # the peer's
    if whole:
        send_messages_in_order(made)
    provider = made.dul.to_provider_queue
    put = provider.put

    def put_then_lose_the_cpu(*args: object, **kwargs: object) -> None:
        put(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.001)  # as when the interpreter switches threads mid-message

    provider.put = put_then_lose_the_cpu  # type: ignore[method-assign]
    report = large_event_report()
    taken, gaps = dul_gaps(made, threading.Thread(target=made.dimse.send_msg, args=(report, 1)))

    assert taken > 40
    if whole:
        assert gaps == [taken]  # empty only once the whole message was taken
    else:  # pynetdicom's own: the DUL thread finds the queue empty between fragments
        assert len(gaps) > 1


def test_on_an_acceptor_a_message_that_fails_to_encode_sends_nothing() -> None:
    made = Association(AE(), "acceptor")
    made.requestor.maximum_length = 4096  # the peer's
    send_messages_in_order(made)
    broken = event_report()
    broken.EventInformation = UnreadableBytes(bytes(100))  # fails after the command fragment

    with pytest.raises(OSError):
        made.dimse.send_msg(broken, 1)
    assert made.dul.to_provider_queue.empty()  # not a command set without its data set


class UnreadableBytes(BytesIO):
    def getvalue(self) -> bytes:
        raise OSError("the data set could not be read")


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "pynetdicom"])
def test_a_follow_up_starts_once_the_message_is_queued_whole(whole: bool) -> None:
    """A storage commitment report starts from the N-ACTION response's EVT_DIMSE_SENT, which
    pynetdicom fires before it encodes the response: `once_queued` holds the start until every
    fragment is queued, so the report cannot overtake the response."""
    made = Association(AE(), "acceptor")
    made.requestor.maximum_length = 4096  # the peer's
    if whole:
        send_messages_in_order(made)
    provider = made.dul.to_provider_queue
    queued_at_start: list[int] = []
    before_the_dul_may_take: list[bool] = []  # the report is under way before the peer can leave

    def on_sent(event: evt.Event) -> None:
        # len(queue), not qsize(): a callback runs under the queue's lock (see once_queued)
        once_queued(lambda: queued_at_start.append(len(provider.queue)))
        once_queued(lambda: before_the_dul_may_take.append(provider.mutex.locked()))

    made.bind(evt.EVT_DIMSE_SENT, on_sent)
    made.dimse.send_msg(large_event_report(), 1)

    fragments = provider.qsize()
    assert fragments > 40
    # pynetdicom's own (no whole-message send): at once, before the first fragment
    assert queued_at_start == [fragments if whole else 0]
    assert before_the_dul_may_take == [whole]


def test_a_follow_up_of_a_message_that_fails_to_encode_never_starts() -> None:
    made = Association(AE(), "acceptor")
    send_messages_in_order(made)
    started: list[bool] = []
    made.bind(evt.EVT_DIMSE_SENT, lambda event: once_queued(lambda: started.append(True)))
    broken = event_report()
    broken.EventInformation = UnreadableBytes(bytes(100))

    with pytest.raises(OSError):
        made.dimse.send_msg(broken, 1)
    assert started == []  # nothing was sent, so nothing may follow it


def running_requestor() -> Association:
    """A requestor tuned to send in order, whose DUL thread the test plays (alive until killed)."""
    made = Association(AE(), "requestor")
    made.acceptor.maximum_length = 4096
    made.dul.is_alive = lambda: not made._kill  # type: ignore[method-assign]  # until killed
    send_messages_in_order(made)
    return made


def take_slowly(made: Association, senders: list[threading.Thread]) -> tuple[list[int], int]:
    """Act as a slow DUL thread while `senders` run: the context ID of each fragment taken, in
    order, and the most fragments ever queued ahead of it."""
    provider = made.dul.to_provider_queue
    contexts, most = [], 0
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders) or not provider.empty():
        most = max(most, provider.qsize())
        try:
            fragment = provider.get(timeout=0.01)
        except queue.Empty:
            continue
        contexts.append(fragment.presentation_data_value_list[0][0])
        time.sleep(0.0002)
    for sender in senders:
        sender.join()
    return contexts, most


def test_on_a_requestor_a_large_message_streams_a_bounded_way_ahead() -> None:
    made = running_requestor()
    report = large_event_report()  # ~50 fragments
    sender = threading.Thread(target=made.dimse.send_msg, args=(report, 1))

    contexts, most = take_slowly(made, [sender])

    assert len(contexts) > 40
    assert 1 <= most <= FRAGMENTS_AHEAD  # never the whole message held at once


def test_on_a_requestor_two_senders_messages_never_interleave() -> None:
    made = running_requestor()
    senders = [
        threading.Thread(target=made.dimse.send_msg, args=(large_event_report(), context))
        for context in (1, 3)
    ]

    contexts, _most = take_slowly(made, senders)

    runs = [context for index, context in enumerate(contexts) if contexts[index - 1] != context]
    assert sorted(contexts) == contexts or sorted(contexts, reverse=True) == contexts
    assert len(set(runs)) == 2  # both messages went, one after the other


def test_on_a_requestor_a_message_broken_off_midway_aborts_the_association() -> None:
    made = running_requestor()
    broken = event_report()
    broken.EventInformation = UnreadableBytes(bytes(100))  # fails after the command fragment

    with pytest.raises(OSError):
        made.dimse.send_msg(broken, 1)
    queued = list(made.dul.to_provider_queue.queue)
    assert [type(item).__name__ for item in queued] == ["P_DATA", "A_ABORT"]


def test_on_a_requestor_the_end_of_the_dul_thread_ends_the_wait_for_room() -> None:
    made = running_requestor()
    made.dul._kill_thread = True  # the connection closed: nobody takes the fragments

    made.dimse.send_msg(large_event_report(), 1)  # returns: the response wait finds the end

    assert made.dul.to_provider_queue.qsize() == FRAGMENTS_AHEAD + 1  # no more, and the abort
    assert made.is_aborted


def test_on_a_requestor_fragments_stay_short_when_the_peer_takes_any_length() -> None:
    made = running_requestor()
    made.acceptor.maximum_length = 0  # the peer announced no maximum: one fragment otherwise
    request = event_report()
    request.EventInformation = BytesIO(bytes(3 * FRAGMENT_BYTES))

    made.dimse.send_msg(request, 1)

    fragments = list(made.dul.to_provider_queue.queue)
    lengths = [len(f.presentation_data_value_list[0][1]) for f in fragments]
    assert len(fragments) >= 4  # the command, then the data set in pieces
    assert max(lengths) <= FRAGMENT_BYTES


def test_on_a_requestor_a_release_waits_for_the_message_under_way() -> None:
    made = running_requestor()
    provider = made.dul.to_provider_queue
    sender = threading.Thread(target=made.dimse.send_msg, args=(large_event_report(), 1))
    sender.start()
    while provider.qsize() < FRAGMENTS_AHEAD:  # the sender now waits for room
        time.sleep(0.001)
    releaser = threading.Thread(target=made.dul.send_pdu, args=(A_RELEASE(),))
    releaser.start()
    time.sleep(0.05)

    assert provider.qsize() == FRAGMENTS_AHEAD  # not queued between the fragments
    taken = []
    while sender.is_alive() or releaser.is_alive() or not provider.empty():
        with contextlib.suppress(queue.Empty):
            taken.append(type(provider.get(timeout=0.01)).__name__)
    assert taken[-1] == "A_RELEASE"
    assert set(taken[:-1]) == {"P_DATA"}


def test_the_senders_wait_ends_once_the_association_is_aborted(assoc: Association) -> None:
    # The reactor, let run by the abort, may take the (None, None) that says the connection
    # ended: the sender would then wait out dimse_timeout for an answer that cannot come.
    assoc.dimse_timeout = 30
    assoc.is_aborted = True
    started = time.monotonic()

    assert assoc.dimse.get_msg(block=True) == (None, None)
    assert time.monotonic() - started < 5
