"""When a destination's failed jobs go at once (`pipeline.recovery.RecoveryWatch`)."""

from dicomnode.pipeline.recovery import RecoveryWatch


def test_a_destination_that_answers_again_brings_its_jobs_forward_once() -> None:
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert not watch.is_back("pacs", False, now=0)  # down
    assert not watch.is_back("pacs", False, now=30)
    assert watch.is_back("pacs", True, now=60)  # back: its failed jobs go now
    # Still answering, its jobs failing for another reason (out of disk): their backoff stands.
    assert not watch.is_back("pacs", True, now=90)
    assert not watch.is_back("pacs", True, now=5000)


def test_the_first_probe_after_a_start_that_answers_brings_the_jobs_forward() -> None:
    """A node restarted while its PACS came back: the jobs need not wait out their backoff."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.is_back("pacs", True, now=0)
    assert not watch.is_back("pacs", True, now=30)


def test_a_probe_that_cannot_tell_changes_nothing() -> None:
    """E.g. a peer that takes no C-ECHO: neither down nor back."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert not watch.is_back("pacs", None, now=0)
    assert not watch.is_back("pacs", False, now=30)
    assert not watch.is_back("pacs", None, now=60)
    assert watch.is_back("pacs", True, now=90)


def test_a_pacs_that_comes_and_goes_brings_them_forward_at_most_once_per_interval() -> None:
    """Each time would cost every failed job an attempt: at most once per max_delay_seconds."""
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert watch.is_back("pacs", True, now=0)
    assert not watch.is_back("pacs", False, now=60)
    assert not watch.is_back("pacs", True, now=120)  # back again within the hour
    assert not watch.is_back("pacs", False, now=3500)
    assert watch.is_back("pacs", True, now=3700)  # an hour on


def test_destinations_are_watched_apart() -> None:
    watch = RecoveryWatch(min_interval_seconds=3600)
    assert not watch.is_back("pacs", False, now=0)
    assert watch.is_back("backup", True, now=0)
    assert watch.is_back("pacs", True, now=30)
