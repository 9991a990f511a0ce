"""When a destination's failed jobs go at once (`pipeline.recovery.RecoveryWatch`)."""

from datetime import UTC, datetime, timedelta

from dicomnode.pipeline.recovery import RecoveryWatch

T0 = datetime(2026, 12, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_destination_that_answers_again_brings_the_jobs_that_failed_while_it_was_down() -> None:
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.back_since("pacs", False, at(0)) is None  # down
    assert watch.back_since("pacs", False, at(30)) is None
    assert watch.back_since("pacs", True, at(60)) == at(30)  # back: what failed by 30 s goes
    watch.brought("pacs", at(60))
    # Still answering, its jobs failing for another reason (out of disk): their backoff stands.
    assert watch.back_since("pacs", True, at(90)) is None
    assert watch.back_since("pacs", True, at(5000)) is None


def test_a_first_probe_that_finds_it_answering_brings_nothing_forward() -> None:
    """A restart (or a second process) must not cost every failed job an attempt at a PACS
    that answers the echo and refuses what is sent."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.back_since("pacs", True, at(0)) is None
    assert watch.back_since("pacs", True, at(30)) is None


def test_a_probe_that_cannot_tell_changes_nothing() -> None:
    """E.g. a peer that takes no C-ECHO: neither down nor back."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.back_since("pacs", None, at(0)) is None
    assert watch.back_since("pacs", False, at(30)) is None
    assert watch.back_since("pacs", None, at(60)) is None
    assert watch.back_since("pacs", True, at(90)) == at(30)


def test_a_pacs_that_comes_and_goes_brings_them_forward_at_most_once_per_interval() -> None:
    """Each time would cost every failed job an attempt: at most once per max_delay_seconds."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.back_since("pacs", False, at(0)) is None
    assert watch.back_since("pacs", True, at(30)) == at(0)
    watch.brought("pacs", at(30))
    assert watch.back_since("pacs", False, at(60)) is None
    assert watch.back_since("pacs", True, at(120)) is None  # back again within the hour
    assert watch.back_since("pacs", True, at(3700)) is None  # that outage is spent
    assert watch.back_since("pacs", False, at(3800)) is None
    assert watch.back_since("pacs", True, at(3900)) == at(3800)  # an hour on: a new one


def test_an_outage_whose_jobs_could_not_be_brought_forward_is_tried_again() -> None:
    """The database was away at the first answer: the next probe brings them."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    watch.back_since("pacs", False, at(0))
    assert watch.back_since("pacs", True, at(30)) == at(0)  # `brought` never came
    assert watch.back_since("pacs", True, at(60)) == at(0)


def test_destinations_are_watched_apart() -> None:
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.back_since("pacs", False, at(0)) is None
    assert watch.back_since("backup", True, at(0)) is None
    assert watch.back_since("pacs", True, at(30)) == at(0)
