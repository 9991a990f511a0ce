"""The job state machine as a table: every kind of outcome, attempt count and newer job."""

import random

import pytest

from dicomnode.config import RetrySettings
from dicomnode.db.transitions import (
    AttemptOutcome,
    DeliveryOutcome,
    Transition,
    after_attempt,
    after_lapsed_lease,
)
from dicomnode.status import DeliveryStatus, JobStatus

POLICY = RetrySettings(
    max_attempts=3, initial_delay_seconds=10, multiplier=2, max_delay_seconds=100, jitter=0
)
DONE = DeliveryOutcome("pacs", DeliveryStatus.DONE)
DOWN = DeliveryOutcome("backup", DeliveryStatus.FAILED, "connection refused")
REFUSED = DeliveryOutcome("pacs", DeliveryStatus.DEAD, "0xC000 for sop=1")
UNRECORDED = DeliveryOutcome("backup", DeliveryStatus.PENDING)


def delivered(*deliveries: DeliveryOutcome, **kwargs: object) -> AttemptOutcome:
    return AttemptOutcome(deliveries=deliveries, **kwargs)  # type: ignore[arg-type]


# (outcome, attempts, newer job) → expected status, text in the error, given-up deliveries
TABLE = [
    # everything delivered
    (delivered(DONE), 1, None, JobStatus.DONE, None, ()),
    # nowhere to send it: kept from retention, unless the node is receive-only on purpose
    (delivered(), 1, None, JobStatus.STORED, "sent nowhere", ()),
    (delivered(receive_only=True), 1, None, JobStatus.DONE, None, ()),
    (delivered(hold="QA verdict 'fail'"), 1, None, JobStatus.HELD, "QA verdict", ()),
    (delivered(DONE), 3, 9, JobStatus.DONE, None, ()),  # a newer job does not undo success
    # a hold on success
    (delivered(DONE, hold="QA verdict 'fail'"), 1, None, JobStatus.HELD, "QA verdict", ()),
    # transient delivery failure: retry, supersede or give up
    (delivered(DONE, DOWN), 1, None, JobStatus.FAILED, "backup: connection refused", ()),
    (delivered(DONE, DOWN), 2, None, JobStatus.FAILED, "(attempt 2, retry in 20 s)", ()),
    (delivered(DONE, DOWN), 3, None, JobStatus.DEAD, "gave up after 3 attempts", ("backup",)),
    (delivered(DONE, DOWN), 1, 7, JobStatus.CANCELLED, "superseded by job 7", ()),
    # a delivery that never recorded its outcome counts as failed
    (delivered(DONE, UNRECORDED), 1, None, JobStatus.FAILED, "outcome not recorded", ()),
    (delivered(UNRECORDED), 3, None, JobStatus.DEAD, "outcome not recorded", ("backup",)),
    # refused for good: dead, unless another destination can still be retried
    (delivered(REFUSED), 1, None, JobStatus.DEAD, "pacs: 0xC000", ()),
    (delivered(REFUSED), 1, 5, JobStatus.DEAD, "pacs: 0xC000", ()),
    (delivered(REFUSED, DOWN), 1, None, JobStatus.FAILED, "pacs: 0xC000 for sop=1; backup", ()),
    (delivered(REFUSED, DOWN), 3, None, JobStatus.DEAD, "gave up", ("backup",)),
    # a failure before delivery
    (delivered(error="model file not found"), 1, None, JobStatus.FAILED, "model file", ()),
    (delivered(error="model file not found"), 3, None, JobStatus.DEAD, "gave up after 3", ()),
    (delivered(error="disk full"), 1, 4, JobStatus.CANCELLED, "superseded by job 4", ()),
    (delivered(error="inputs missing", transient=False), 1, None, JobStatus.DEAD, "inputs", ()),
    (delivered(error="inputs missing", transient=False), 1, 4, JobStatus.DEAD, "inputs", ()),
    # an error before delivery wins over a hold; pending rows are not blamed for it
    (delivered(UNRECORDED, error="x", hold="h"), 1, None, JobStatus.FAILED, "x (attempt 1", ()),
]


@pytest.mark.parametrize(("outcome", "attempts", "newer", "status", "text", "given_up"), TABLE)
def test_the_state_after_an_attempt(
    outcome: AttemptOutcome,
    attempts: int,
    newer: int | None,
    status: JobStatus,
    text: str | None,
    given_up: tuple[str, ...],
) -> None:
    transition = after_attempt(outcome, attempts, POLICY, newer)
    assert transition.status == status
    if text is None:
        assert transition.error is None
    else:
        assert transition.error is not None and text in transition.error
    assert transition.deliveries_given_up == given_up
    assert (transition.retry_in_seconds is not None) == (status == JobStatus.FAILED)


def test_the_retry_delay_grows_with_the_attempts_and_is_capped() -> None:
    failing = delivered(DOWN)
    policy = RetrySettings(
        max_attempts=10, initial_delay_seconds=10, multiplier=2, max_delay_seconds=50, jitter=0
    )
    delays = [after_attempt(failing, n, policy).retry_in_seconds for n in range(1, 6)]
    assert delays == [10, 20, 40, 50, 50]


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    policy = RetrySettings(max_attempts=10, initial_delay_seconds=100, jitter=0.25)
    rng = random.Random(1)
    delays = {
        after_attempt(delivered(DOWN), 1, policy, rng=rng).retry_in_seconds for _ in range(50)
    }
    assert all(d is not None and 75 <= d <= 125 for d in delays) and len(delays) > 40


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, JobStatus.QUEUED), (2, JobStatus.QUEUED), (3, JobStatus.DEAD), (4, JobStatus.DEAD)],
)
def test_a_job_whose_worker_died_is_queued_again_until_it_died_max_attempts_times(
    attempts: int, expected: JobStatus
) -> None:
    transition = after_lapsed_lease(42, attempts, max_attempts=3)
    assert transition.status == expected
    if expected == JobStatus.DEAD:
        assert transition.error is not None
        assert f"during each of {attempts} attempts" in transition.error
        assert "dicomnode jobs retry 42" in transition.error
    else:
        assert transition == Transition(JobStatus.QUEUED)
