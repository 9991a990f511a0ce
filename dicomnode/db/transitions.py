"""Which state a job goes to: pure functions of what happened, the attempts and the policy.

The database layer gathers the facts (the attempt's error, each delivery's outcome, whether a
newer job of the same series exists), asks `after_attempt` or `after_lapsed_lease`, and applies
the answer. Nothing here touches SQL, so the whole table is tested in
`tests/unit/test_transitions.py`.
"""

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dicomnode.config import RetrySettings
from dicomnode.db.backoff import retry_delay_seconds
from dicomnode.status import DeliveryStatus, JobStatus

STORED_NOTE = (
    "received and kept, sent nowhere: no destinations were configured when the job was made; "
    "retention keeps it (add [[destinations]] and restart, then `dicomnode jobs resend ID -d "
    "NAME` sends it; or set node.receive_only = true on purpose)"
)


# What a delivery to a destination the running node does not know ends with (dead): taken
# out of the settings, or put in after the node started. An admin's retry or release drops
# such a delivery when the settings do not name the destination either, so the job can finish
# with the others, and sends it again when they do (`admin._queue_again`).
NOT_CONFIGURED = "is not in the running node's settings"


def not_configured(destination: str, job_id: int) -> str:
    return (
        f"destination {destination!r} {NOT_CONFIGURED} (taken out, or put in after the node "
        f"started); `dicomnode jobs retry {job_id}` drops it if it is not in the settings, and "
        "sends to it again if it is (restart the node first)"
    )


@dataclass(frozen=True)
class DeliveryOutcome:
    """Where one destination's delivery stands when the attempt ends."""

    destination: str
    status: DeliveryStatus
    error: str | None = None
    # Failed only because the originals of its series are not there yet (`originals_first`):
    # nothing was sent or refused, so the attempt says nothing of the job.
    waits_for_originals: bool = False
    attempts: int = 1  # the tries of this delivery so far, this one and waits included


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
    """The job's next state, its error text, when to retry, and deliveries that are given up;
    `spent`: whether the attempt counts against `retry.max_attempts`."""

    status: JobStatus
    error: str | None = None
    retry_in_seconds: float | None = None
    deliveries_given_up: tuple[str, ...] = ()
    spent: bool = True


# How an attempt that only waited for the originals says it spent nothing (its error).
NOT_COUNTED = "a wait, not counted as an attempt"
# Attempts of a job that failed before delivery, at most (about an hour at the retry defaults).
MAX_PROCESSING_ATTEMPTS = 8
# A series that kills its worker this often is not taken up again without an admin. Apart from
# `retry.max_attempts`, which is sized for a PACS that is down for days: a series that crashes
# the process must not restart it that often.
MAX_LAPSES = 3


def after_attempt(
    outcome: AttemptOutcome,
    attempts: int,
    policy: RetrySettings,
    newer_job: int | None = None,
    rng: random.Random | None = None,
    *,
    ended_before_delivery: int | None = None,
) -> Transition:
    """The state after attempt number `attempts` ended with `outcome`; `ended_before_delivery`:
    how many of them (this one included) ended before any delivery (default: all of them).

    done (or held) when nothing went wrong; stored when there was nowhere to send it and the
    node is not receive-only on purpose (retention keeps it); cancelled when a newer job of the
    series exists (a retry would send the older set after it); failed with a backoff while any
    problem may pass and attempts remain; else dead, with the failed deliveries given up.

    A derived job whose only problem is that its originals have not reached a destination yet
    fails without spending the attempt: it did nothing that could fail. Otherwise a long outage
    would give it up beside originals that were still being retried, or before them. It cannot
    wait for ever: the originals' own attempts are bounded, and once they are given up it goes.
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
    # Only waits for the originals: not counted (`jobs.finish_attempt` puts the next try after
    # the originals' next attempt besides), but on the backoff of the tries there, since each
    # asked the destination (a C-ECHO, for the cause).
    waits_only = outcome.error is None and not dead and bool(failed)
    if retryable and waits_only and all(d.waits_for_originals for d in failed):
        counted = attempts - 1  # this one is not
        delay = retry_delay_seconds(max(d.attempts for d in failed), policy, rng)
        error = "; ".join(problems) + (
            f" ({NOT_COUNTED}: {counted} of {policy.max_attempts} so far; "
            "tried again when they arrive, or after their next attempt)"
        )
        return Transition(JobStatus.FAILED, error, retry_in_seconds=delay, spent=False)
    # A failure before delivery (the enhancement, the inputs) is no outage to ride out: each
    # retry costs a worker minutes, and a dead job is what alerts an admin. Only such attempts
    # count towards it: a job whose PACS was down for a day is not dead at its first one.
    before_delivery = attempts if ended_before_delivery is None else ended_before_delivery
    within = attempts < policy.max_attempts
    if outcome.error is not None:
        within = within and before_delivery < MAX_PROCESSING_ATTEMPTS
    if retryable and within:
        # A delivery that failed goes on from its tries, waits for the originals included: the
        # same outage goes on once the job stops waiting, and its backoff does not start over.
        # Not for a failure before delivery, nor from a destination where it still waits.
        tries = [d.attempts for d in failed if not d.waits_for_originals]
        delay = retry_delay_seconds(
            attempts if outcome.error is not None else max([attempts, *tries]), policy, rng
        )
        error = "; ".join(problems) + f" (attempt {attempts}, the next {delay:.0f} s after it)"
        return Transition(JobStatus.FAILED, error, retry_in_seconds=delay)
    if retryable:
        if attempts < policy.max_attempts and before_delivery < attempts:
            given_up = f"{before_delivery} attempts that ended before delivery ({attempts} in all)"
        else:
            given_up = f"{attempts} attempts"
        problems.append(f"gave up after {given_up}")
    return Transition(
        JobStatus.DEAD,
        "; ".join(problems),
        deliveries_given_up=tuple(d.destination for d in failed),
    )


def after_lapsed_lease(job_id: int, lapses: int, max_attempts: int) -> Transition:
    """The state of a job whose worker stopped renewing its lease (it died mid-attempt), for the
    `lapses`-th time (this one included) since it was last queued by an admin.

    Queued again, unless its workers died MAX_LAPSES times (or `max_attempts`, if fewer): a
    series that kills the process (out of memory, a crashing decoder) must not be taken up
    first after every restart. Only the lapses count here, and a lapsed attempt is not counted
    against `max_attempts` (the job is queued with its attempts as before it): an attempt cut
    short says nothing of the job.
    """
    if lapses < min(max_attempts, MAX_LAPSES):
        return Transition(JobStatus.QUEUED)
    return Transition(
        JobStatus.DEAD,
        f"its worker stopped (crash, kill or out of memory) during {lapses} of its attempts; "
        f"inputs kept, `dicomnode jobs retry {job_id}`",
    )


# What an admin may do to a job in each state (`dicomnode jobs retry|release|cancel`).
RETRYABLE = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)
RELEASABLE = (JobStatus.HELD,)
NOT_CANCELLABLE = (JobStatus.DONE, JobStatus.CANCELLED)


class AdminAction(enum.StrEnum):
    """What an admin may do to one job (`dicomnode jobs <action> ID`)."""

    RETRY = "retry"  # process (or replay) again, with fresh attempts
    RELEASE = "release"  # send the derived series QA held back
    CANCEL = "cancel"
    RESEND = "resend"  # send a done job's series again
    DISCARD = "discard"  # delete a given-up series from the spool and the database


_DONE = {
    AdminAction.RETRY: "retried",
    AdminAction.RELEASE: "released",
    AdminAction.CANCEL: "cancelled",
    AdminAction.RESEND: "resent",
    AdminAction.DISCARD: "discarded",
}
# The states each action applies to.
ALLOWED: dict[AdminAction, tuple[JobStatus, ...]] = {
    AdminAction.RETRY: RETRYABLE,
    AdminAction.RELEASE: RELEASABLE,
    AdminAction.CANCEL: tuple(s for s in JobStatus if s not in NOT_CANCELLABLE),
    AdminAction.RESEND: (JobStatus.DONE, JobStatus.STORED),  # stored: to a destination added since
    AdminAction.DISCARD: (JobStatus.DEAD, JobStatus.CANCELLED),
}
# What an admin most likely wants instead, where an action does not apply (said after it).
_INSTEAD = {
    (AdminAction.RETRY, JobStatus.DONE): " (to send it again: `dicomnode jobs resend {job_id}`)",
    (AdminAction.RETRY, JobStatus.STORED): " (to send it again: `dicomnode jobs resend {job_id}`)",
    (AdminAction.RETRY, JobStatus.HELD): " (to send it: `dicomnode jobs release {job_id}`)",
    (AdminAction.RESEND, JobStatus.HELD): " (to send it: `dicomnode jobs release {job_id}`)",
    (AdminAction.RESEND, JobStatus.DEAD): " (to try it again: `dicomnode jobs retry {job_id}`)",
    (AdminAction.RESEND, JobStatus.FAILED): " (it is retried; `dicomnode jobs retry {job_id}` now)",
}
# A series may leave the disk by hand once none of its jobs will still do anything.
AT_REST_FOR_DISCARD = (JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED)


def admin_refusal(
    action: AdminAction, job_id: int, status: JobStatus, newer_job: int | None = None
) -> str | None:
    """Why `action` does not apply to job `job_id` in `status`; None when it does.

    A resend of a job that a newer job of its series superseded would send the older set after
    the newer one, so the newer job is named instead.
    """
    allowed = ALLOWED[action]
    if status not in allowed:
        if action == AdminAction.CANCEL:
            return f"job {job_id} is already {status}"
        refusal = f"job {job_id} is {status}; only {', '.join(allowed)} jobs can be {_DONE[action]}"
        return refusal + _INSTEAD.get((action, status), "").format(job_id=job_id)
    if action == AdminAction.RESEND and newer_job is not None:
        return (
            f"job {job_id} was superseded by job {newer_job} of the same series and part; "
            f"resend job {newer_job}"
        )
    return None


def discard_refusal(
    job_id: int,
    status: JobStatus,
    series_jobs: Sequence[tuple[int, JobStatus]],
    instances_waiting: bool,
) -> str | None:
    """Why the series of job `job_id` may not be discarded; None when it may.

    Only a dead or cancelled job is discarded, with its whole series (every job of it, every
    instance): so every other job of the series must be at rest too, and no instance may be
    waiting for a new job (it arrived after the admin decided).
    """
    refused = admin_refusal(AdminAction.DISCARD, job_id, status)
    if refused:
        return refused
    for other, other_status in series_jobs:
        if other != job_id and other_status not in AT_REST_FOR_DISCARD:
            return (
                f"job {other} of the same series is {other_status}; wait for it or cancel it "
                f"(`dicomnode jobs cancel {other}`), then discard"
            )
    if instances_waiting:
        return (
            f"the series of job {job_id} received new instances that wait for a job; "
            "let that job run first"
        )
    return None
