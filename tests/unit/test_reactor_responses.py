"""The reactor of an association we request leaves a response to the `send_*` waiting for it.

pynetdicom's reactor can slip past the pause a `send_*` asks of it and take that sender's response
off the queue ("Received unexpected C-STORE service message"): the sender then waits out the
DIMSE timeout and the delivery fails (about once per 700 C-STOREs to DCMTK `storescp` here).
`dicom/association.py` makes the reactor's look at the queue skip a response while a send is
under way. These tests drive that look on pynetdicom's own Association and DIMSE primitives; the
integration test (tests/integration/test_forwarding_tuning.py) checks that real associations
get it.
"""

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, N_EVENT_REPORT

from dicomnode.dicom.association import _leave_responses_to_their_sender

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
    _leave_responses_to_their_sender(made)
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
