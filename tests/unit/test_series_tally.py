"""When one attempt to send a series stops, and the one error that tells what became of it."""

from dicomnode.errors import ForwardError, SeriesIncomplete, UnreadableSpool
from dicomnode.forward.tally import MAX_BROKEN_OFF, SeriesTally


def test_a_series_stored_whole_has_no_error_and_keeps_the_remarks() -> None:
    tally = SeriesTally(total=2)
    tally.stored("1")
    tally.stored("2", "0xB000 (coercion of data elements) for sop=2")
    assert tally.error() is None
    assert (tally.delivered, tally.warnings) == (["1", "2"], 1)
    assert tally.remarks == ["0xB000 (coercion of data elements) for sop=2"]


def test_the_outcomes_count_every_instance_tried_once() -> None:
    tally = SeriesTally(total=8, tried=7)
    tally.stored("1")
    tally.stored("2", "0x0111 (duplicate SOP instance: already there) for sop=2")
    tally.refuse("0x0122 for sop=3")
    tally.defer("0xA700 for sop=4")
    tally.break_off("no C-STORE response for sop=5")
    tally.unread("cannot read the spooled file of sop=6")
    tally.cannot_send("cannot decompress sop=7")
    assert tally.outcomes() == {
        "stored": 1,
        "warning": 1,
        "refused": 1,
        "deferred": 1,
        "broken_off": 1,
        "unreadable": 1,
        "unsendable": 1,
    }
    assert sum(tally.outcomes().values()) == tally.tried


def test_one_try_later_answer_goes_on_two_in_a_row_stop() -> None:
    tally = SeriesTally(total=10)
    assert not tally.defer("0xA700 for sop=1")
    tally.stored("2")  # a success between: the first was about its instance
    assert not tally.defer("0xA700 for sop=3")
    assert tally.defer("0xA700 for sop=4")  # two in a row: about the peer
    tally.tried = 4
    error = tally.error()
    # Stopped early, the peer is failing: not "up and answering" (the job's next series wait).
    assert error is not None and not isinstance(error, SeriesIncomplete)
    assert error.transient and error.sent == 1
    assert str(error) == (
        "answered 0xA700 for sop=1; 0xA700 for sop=3; 0xA700 for sop=4 "
        "(3 of 10 instances not taken for now, 1 sent, stopped there: 6 not tried)"
    )


def test_try_later_is_retried_and_still_names_what_was_refused_for_good() -> None:
    tally = SeriesTally(total=3)
    tally.tried = 3
    tally.refuse("0xC000 for sop=1")
    tally.defer("0x0110 for sop=2")
    tally.stored("3")
    error = tally.error()
    assert isinstance(error, SeriesIncomplete)  # the deferred one may go later
    assert str(error) == (
        "answered 0x0110 for sop=2 (1 of 3 instances not taken for now, 1 sent); "
        "refused 1 of 3 instances: 0xC000 for sop=1"
    )


def test_broken_off_stops_past_its_limit_and_unreadable_files_are_named_with_it() -> None:
    tally = SeriesTally(total=9)
    tally.unread("cannot read the spooled file of sop=0 (/spool/0.dcm): gone")
    stops = [tally.break_off(f"no C-STORE response for sop={n}") for n in range(1, 6)]
    assert stops == [False] * MAX_BROKEN_OFF + [True, True]
    tally.tried = 6
    error = tally.error()
    assert error is not None and error.transient and not isinstance(error, UnreadableSpool)
    message = str(error)
    assert message.startswith("broke off the association on 5 of 9 instances (0 sent, ")
    assert "stopped there: 3 not tried)" in message and "; and 2 more" in message
    assert message.endswith(
        "1 of 9 spooled files could not be read (0 of 9 sent): "
        "cannot read the spooled file of sop=0 (/spool/0.dcm): gone"
    )


def test_only_unreadable_files_are_our_fault_and_only_refusals_are_for_good() -> None:
    ours = SeriesTally(total=2, tried=2)
    ours.unread("cannot read the spooled file of sop=1 (/spool/1.dcm): gone")
    ours.stored("2")
    assert isinstance(ours.error(), UnreadableSpool)

    refused = SeriesTally(total=2, tried=2)
    refused.refuse("0x0122 for sop=1")
    refused.refuse("0x0122 for sop=2")
    error = refused.error()
    assert error is not None and not error.transient
    assert str(error) == "refused 2 of 2 instances: 0x0122 for sop=1; 0x0122 for sop=2"


def test_an_error_that_ends_the_attempt_midway_keeps_what_came_before_it() -> None:
    tally = SeriesTally(total=5, tried=3)
    tally.stored("1")
    tally.defer("0xA700 for sop=2")
    timeout = ForwardError("no C-STORE response for sop=3 within 30 s", transient=True)
    error = tally.ending(timeout)
    assert error.transient and error.sent == 1
    assert str(error) == (
        "no C-STORE response for sop=3 within 30 s; before that: answered 0xA700 for "
        "sop=2 (1 of 5 instances not taken for now, 1 sent, stopped there: 2 not tried)"
    )
    clean = SeriesTally(total=5, tried=1)
    clean.stored("1")
    assert clean.ending(timeout) is timeout and timeout.sent == 1


def test_what_we_cannot_send_is_told_apart_from_what_the_peer_refused() -> None:
    tally = SeriesTally(total=3, tried=3)
    tally.refuse("0x0122 for sop=1")
    tally.cannot_send("cannot decompress sop=2 for the uncompressed fallback: no decoder")
    tally.stored("3")
    error = tally.error()
    assert error is not None and not error.transient and error.sent == 1
    assert str(error) == (
        "refused 1 of 3 instances: 0x0122 for sop=1; 1 of 3 instances cannot be sent in a "
        "transfer syntax it takes: cannot decompress sop=2 for the uncompressed "
        "fallback: no decoder"
    )


def test_a_retry_counts_what_the_peer_stored_on_earlier_attempts_as_part_of_the_series() -> None:
    """Only the instance left over is sent again; the error still speaks of the whole series."""
    tally = SeriesTally(total=1, earlier=11, tried=1)
    tally.defer("0x0110 for sop=7")
    error = tally.error()
    assert isinstance(error, SeriesIncomplete) and error.stored == ()
    assert str(error) == (
        "answered 0x0110 for sop=7 (1 of 12 instances not taken for now, 11 sent)"
    )
    assert tally.outcomes()["deferred"] == 1 and tally.outcomes()["stored"] == 0


def test_a_series_refused_for_its_sop_class_alone_says_so_for_the_hint_that_fits() -> None:
    """A metrics report refused for its class is helped by send_metrics_reports = false; one
    refused for its content (0xA900) is not (pipeline/delivery.py reads `class_refused`)."""
    by_class = SeriesTally(total=1, tried=1)
    by_class.refuse("0x0122 for sop=1", class_refused=True)
    assert (error := by_class.error()) is not None and error.class_refused
    mixed = SeriesTally(total=2, tried=2)
    mixed.refuse("0x0122 for sop=1", class_refused=True)
    mixed.refuse("0xA900 for sop=2")
    assert (error := mixed.error()) is not None and not error.class_refused
