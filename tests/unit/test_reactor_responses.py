"""The reactor of an association leaves a response to the `send_*` waiting for it, survives the
end of its connection, and alone says whether it is paused (dicomnode/dicom/reactor.py).

pynetdicom's reactor can slip past the pause a `send_*` asks of it and take that sender's response
off the queue ("Received unexpected C-STORE service message"): the sender then waits out the
DIMSE timeout and the delivery fails (about once per 700 C-STOREs to DCMTK `storescp` here).
`dicom/reactor.py` makes the reactor's look at the queue skip a response while a send is
under way. These tests drive that look on pynetdicom's own Association and DIMSE primitives; the
integration test (tests/integration/test_forwarding_tuning.py) checks that real associations
get it.
"""

import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, N_EVENT_REPORT

from dicomnode.dicom.reactor import own_the_pause, share_the_queue, tune

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
