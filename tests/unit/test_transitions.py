"""The job state machine as a table: every kind of outcome, attempt count and newer job."""

import random
from dataclasses import replace

import pytest

from dicomnode.config import RetrySettings
from dicomnode.db.transitions import (
    MAX_LAPSES,
    MAX_PROCESSING_ATTEMPTS,
    AdminAction,
    AttemptOutcome,
    DeliveryOutcome,
    Transition,
    admin_refusal,
    after_attempt,
    after_lapsed_lease,
    discard_refusal,
)
from dicomnode.status import DeliveryStatus, JobStatus

POLICY = RetrySettings(
    max_attempts=3, initial_delay_seconds=10, multiplier=2, max_delay_seconds=100, jitter=0
)
DONE = DeliveryOutcome("pacs", DeliveryStatus.DONE)
DOWN = DeliveryOutcome("backup", DeliveryStatus.FAILED, "connection refused")
REFUSED = DeliveryOutcome("pacs", DeliveryStatus.DEAD, "0xC000 for sop=1")
UNRECORDED = DeliveryOutcome("backup", DeliveryStatus.PENDING)
WAITS = DeliveryOutcome(
    "backup", DeliveryStatus.FAILED, "waits for the originals", waits_for_originals=True
)


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
    (delivered(DONE, DOWN), 2, None, JobStatus.FAILED, "(attempt 2, the next 20 s after it)", ()),
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


def test_a_derived_job_that_only_waits_for_its_originals_spends_no_attempt() -> None:
    """Not even its last: the originals' own attempts bound the wait. Beside a real failure,
    or an error before delivery, the attempt counts as any other."""
    for attempts in (1, 3, 50):
        waited = after_attempt(delivered(DONE, WAITS), attempts, POLICY)
        assert (waited.status, waited.spent) == (JobStatus.FAILED, False)
        assert waited.error is not None
        assert f"not counted as an attempt: {attempts - 1} of 3 so far" in waited.error
    # on the backoff of the delivery's tries, waits included: each asks the destination
    delays = [
        after_attempt(delivered(replace(WAITS, attempts=tries)), 1, POLICY).retry_in_seconds
        for tries in (1, 2, 3, 4, 9)
    ]
    assert delays == [10, 20, 40, 80, 100]
    # once the originals are given up it goes on its own, on from those tries (the outage goes
    # on; an acceptance run saw it start over at the first delay and spend its attempts in 31 s)
    on_its_own = after_attempt(delivered(replace(DOWN, attempts=5)), 1, POLICY)
    assert (on_its_own.status, on_its_own.retry_in_seconds) == (JobStatus.FAILED, 100)
    # but not another destination's waits, nor a failure before delivery
    waited_long = replace(WAITS, attempts=20)
    beside = after_attempt(delivered(waited_long, replace(DOWN, destination="pacs")), 1, POLICY)
    assert beside.retry_in_seconds == 10
    errored = after_attempt(delivered(waited_long, error="outbox unreadable"), 1, POLICY)
    assert errored.retry_in_seconds == 10
    also_down = after_attempt(delivered(WAITS, DOWN), 3, POLICY)
    assert (also_down.status, also_down.spent) == (JobStatus.DEAD, True)
    refused = after_attempt(delivered(WAITS, REFUSED), 1, POLICY)
    assert (refused.status, refused.spent) == (JobStatus.FAILED, True)
    errored = after_attempt(delivered(WAITS, error="disk full"), 3, POLICY)
    assert (errored.status, errored.spent) == (JobStatus.DEAD, True)
    superseded = after_attempt(delivered(WAITS), 1, POLICY, newer_job=9)
    assert superseded.status == JobStatus.CANCELLED


@pytest.mark.parametrize(
    ("lapses", "expected"),
    [(1, JobStatus.QUEUED), (2, JobStatus.QUEUED), (3, JobStatus.DEAD), (4, JobStatus.DEAD)],
)
def test_a_job_whose_worker_died_is_queued_again_until_it_died_max_attempts_times(
    lapses: int, expected: JobStatus
) -> None:
    transition = after_lapsed_lease(42, lapses, max_attempts=3)
    assert transition.status == expected
    if expected == JobStatus.DEAD:
        assert transition.error is not None
        assert f"during {lapses} of its attempts" in transition.error
        assert "dicomnode jobs retry 42" in transition.error
    else:
        assert transition == Transition(JobStatus.QUEUED)


def test_a_failure_before_delivery_is_not_retried_for_as_long_as_an_outage() -> None:
    """80 attempts over 3 days are for a PACS that is down; an enhancement that fails every
    time cost a worker minutes each, and the job stayed `failed` (no alert) for 3 days."""
    policy = RetrySettings(max_attempts=80, jitter=0)
    broken = AttemptOutcome(error="enhancement failed: out of memory")
    before_delivery = after_attempt(broken, MAX_PROCESSING_ATTEMPTS - 1, policy)
    assert before_delivery.status == JobStatus.FAILED
    given_up = after_attempt(broken, MAX_PROCESSING_ATTEMPTS, policy)
    assert given_up.status == JobStatus.DEAD
    assert f"gave up after {MAX_PROCESSING_ATTEMPTS} attempts" in (given_up.error or "")
    down = after_attempt(delivered(DOWN), MAX_PROCESSING_ATTEMPTS, policy)
    assert down.status == JobStatus.FAILED  # a destination down goes on being tried


def test_only_attempts_that_ended_before_delivery_count_towards_their_limit() -> None:
    """A job whose PACS was down for a day (attempts past MAX_PROCESSING_ATTEMPTS, all of them
    delivering) was dead at its first failure before delivery."""
    policy = RetrySettings(max_attempts=80, jitter=0)
    broken = AttemptOutcome(error="the spool is not there")
    after_a_day = MAX_PROCESSING_ATTEMPTS + 10
    first = after_attempt(broken, after_a_day, policy, ended_before_delivery=1)
    assert first.status == JobStatus.FAILED
    last = after_attempt(broken, after_a_day, policy, ended_before_delivery=MAX_PROCESSING_ATTEMPTS)
    assert last.status == JobStatus.DEAD
    said = f"{MAX_PROCESSING_ATTEMPTS} attempts that ended before delivery ({after_a_day} in all)"
    assert said in (last.error or "")
    assert after_attempt(broken, 80, policy, ended_before_delivery=1).status == JobStatus.DEAD


def test_a_job_that_kills_its_worker_is_dead_after_three_lapses_however_long_retries_go() -> None:
    # retry.max_attempts is sized for a PACS down for days, not for restarts of a crashing node
    assert after_lapsed_lease(42, 2, max_attempts=80).status == JobStatus.QUEUED
    assert after_lapsed_lease(42, MAX_LAPSES, max_attempts=80).status == JobStatus.DEAD
    assert MAX_LAPSES == 3


# What an admin may do in each state: (action, state, newer job) → None, or text of the refusal.
S = JobStatus
ADMIN_TABLE = [
    (AdminAction.RETRY, S.DEAD, None, None),
    (AdminAction.RETRY, S.FAILED, None, None),
    (AdminAction.RETRY, S.CANCELLED, None, None),
    (
        AdminAction.RETRY,
        S.DONE,
        None,
        "can be retried (to send it again: `dicomnode jobs resend 7`)",
    ),
    (AdminAction.RETRY, S.HELD, None, "job 7 is held"),
    (AdminAction.RELEASE, S.HELD, None, None),
    (AdminAction.RELEASE, S.DONE, None, "only held jobs can be released"),
    (AdminAction.CANCEL, S.QUEUED, None, None),
    (AdminAction.CANCEL, S.PROCESSING, None, None),
    (AdminAction.CANCEL, S.HELD, None, None),
    (AdminAction.CANCEL, S.DONE, None, "job 7 is already done"),
    (AdminAction.CANCEL, S.CANCELLED, None, "already cancelled"),
    (AdminAction.RESEND, S.DONE, None, None),
    (AdminAction.RESEND, S.STORED, None, None),  # sent nowhere: to a destination added since
    (
        AdminAction.RESEND,
        S.DONE,
        9,
        "superseded by job 9 of the same series and part; resend job 9",
    ),
    (
        AdminAction.RESEND,
        S.DEAD,
        None,
        "can be resent (to try it again: `dicomnode jobs retry 7`)",
    ),
    (AdminAction.RESEND, S.HELD, None, "resent (to send it: `dicomnode jobs release 7`)"),
    (AdminAction.RESEND, S.FORWARDING, None, "job 7 is forwarding"),
    (AdminAction.DISCARD, S.DEAD, None, None),
    (AdminAction.DISCARD, S.CANCELLED, None, None),
    (AdminAction.DISCARD, S.DONE, None, "only dead, cancelled jobs can be discarded"),
    (AdminAction.DISCARD, S.FAILED, None, "only dead, cancelled jobs can be discarded"),
]


@pytest.mark.parametrize(("action", "status", "newer", "refusal"), ADMIN_TABLE)
def test_what_an_admin_may_do_in_each_state(
    action: AdminAction, status: JobStatus, newer: int | None, refusal: str | None
) -> None:
    answer = admin_refusal(action, 7, status, newer)
    if refusal is None:
        assert answer is None
    else:
        assert answer is not None and refusal in answer


# (the job's state, every job of its series, instances waiting) → None, or text of the refusal
DISCARD_TABLE = [
    (S.DEAD, [(7, S.DEAD)], False, None),
    (S.DEAD, [(6, S.DONE), (7, S.DEAD)], False, None),  # the originals went: the series may go
    (S.CANCELLED, [(6, S.CANCELLED), (7, S.CANCELLED)], False, None),
    (S.DEAD, [(6, S.FAILED), (7, S.DEAD)], False, "job 6 of the same series is failed"),
    (S.DEAD, [(7, S.DEAD), (8, S.QUEUED)], False, "jobs cancel 8"),
    (S.DEAD, [(7, S.DEAD), (8, S.HELD)], False, "job 8 of the same series is held"),
    (S.DEAD, [(7, S.DEAD)], True, "new instances that wait for a job"),
    (S.DONE, [(7, S.DONE)], False, "only dead, cancelled jobs can be discarded"),
]


@pytest.mark.parametrize(("status", "series_jobs", "waiting", "refusal"), DISCARD_TABLE)
def test_when_a_series_may_be_discarded(
    status: JobStatus,
    series_jobs: list[tuple[int, JobStatus]],
    waiting: bool,
    refusal: str | None,
) -> None:
    answer = discard_refusal(7, status, series_jobs, waiting)
    if refusal is None:
        assert answer is None
    else:
        assert answer is not None and refusal in answer
