"""Which state a job goes to: pure functions of what happened, the attempts and the policy.

The database layer gathers the facts (the attempt's error, each delivery's outcome, whether a
newer job of the same series exists), asks `after_attempt` or `after_lapsed_lease`, and applies
the answer. Nothing here touches SQL, so the whole table is tested in
`tests/unit/test_transitions.py`.
"""

import random
from dataclasses import dataclass

from dicomnode.config import RetrySettings
from dicomnode.db.backoff import retry_delay_seconds
from dicomnode.status import DeliveryStatus, JobStatus

STORED_NOTE = (
    "received and kept, sent nowhere: no destinations were configured when the job was made; "
    "retention keeps it (add [[destinations]], or set node.receive_only = true on purpose)"
)


@dataclass(frozen=True)
class DeliveryOutcome:
    """Where one destination's delivery stands when the attempt ends."""

    destination: str
    status: DeliveryStatus
    error: str | None = None


@dataclass(frozen=True)
class AttemptOutcome:
    """What one worker's attempt came to.

    `error` is a failure before delivery (unreadable inputs, a missing model); `transient` says
    whether a later attempt may fix it; `hold` is why a successful attempt kept outputs back.
    """

    deliveries: tuple[DeliveryOutcome, ...] = ()
    error: str | None = None
    transient: bool = True
    hold: str | None = None
    receive_only: bool = False  # node.receive_only: no deliveries is what the admin asked for


@dataclass(frozen=True)
class Transition:
    """The job's next state, its error text, when to retry, and deliveries that are given up."""

    status: JobStatus
    error: str | None = None
    retry_in_seconds: float | None = None
    deliveries_given_up: tuple[str, ...] = ()


def after_attempt(
    outcome: AttemptOutcome,
    attempts: int,
    policy: RetrySettings,
    newer_job: int | None = None,
    rng: random.Random | None = None,
) -> Transition:
    """The state after attempt number `attempts` ended with `outcome`.

    done (or held) when nothing went wrong; stored when there was nowhere to send it and the
    node is not receive-only on purpose (retention keeps it); cancelled when a newer job of the
    series exists (a retry would send the older set after it); failed with a backoff while any
    problem may pass and attempts remain; else dead, with the failed deliveries given up.
    """
    failed = [d for d in outcome.deliveries if d.status == DeliveryStatus.FAILED]
    dead = [d for d in outcome.deliveries if d.status == DeliveryStatus.DEAD]
    problems = [f"{d.destination}: {d.error}" for d in (*dead, *failed)]
    if outcome.error is None:
        # After delivery every row has an outcome; a pending one never got it (a crash).
        unrecorded = [d for d in outcome.deliveries if d.status == DeliveryStatus.PENDING]
        failed += unrecorded
        problems += [
            f"{d.destination}: delivery outcome not recorded (internal error, see the log)"
            for d in unrecorded
        ]
    else:
        problems.insert(0, outcome.error)
    if not problems:
        if outcome.hold:
            return Transition(JobStatus.HELD, outcome.hold)
        if not outcome.deliveries and not outcome.receive_only:
            return Transition(JobStatus.STORED, STORED_NOTE)
        return Transition(JobStatus.DONE)

    # A destination that refused for good must not stop the retries of one that was only down:
    # the job stays retryable while any delivery is; a permanent error before delivery is final.
    unusable = outcome.error is not None and not outcome.transient
    retryable = not unusable and (outcome.error is not None or bool(failed))
    if retryable and newer_job is not None:
        return Transition(
            JobStatus.CANCELLED,
            f"superseded by job {newer_job} (this attempt: {'; '.join(problems)})",
        )
    if retryable and attempts < policy.max_attempts:
        delay = retry_delay_seconds(attempts, policy, rng)
        error = "; ".join(problems) + f" (attempt {attempts}, retry in {delay:.0f} s)"
        return Transition(JobStatus.FAILED, error, retry_in_seconds=delay)
    if retryable:
        problems.append(f"gave up after {attempts} attempts")
    return Transition(
        JobStatus.DEAD,
        "; ".join(problems),
        deliveries_given_up=tuple(d.destination for d in failed),
    )


def after_lapsed_lease(job_id: int, attempts: int, max_attempts: int) -> Transition:
    """The state of a job whose worker stopped renewing its lease (it died mid-attempt).

    Queued again, unless its workers died `max_attempts` times: a series that kills the process
    (out of memory, a crashing decoder) must not be taken up first after every restart.
    """
    if attempts < max_attempts:
        return Transition(JobStatus.QUEUED)
    return Transition(
        JobStatus.DEAD,
        f"its worker stopped (crash, kill or out of memory) during each of {attempts} attempts; "
        f"inputs kept, `dicomnode jobs retry {job_id}`",
    )


# What an admin may do to a job in each state (`dicomnode jobs retry|release|cancel`).
RETRYABLE = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)
RELEASABLE = (JobStatus.HELD,)
NOT_CANCELLABLE = (JobStatus.DONE, JobStatus.CANCELLED)
