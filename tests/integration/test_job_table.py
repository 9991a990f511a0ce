"""The job table on a real SQLite file and a real PostgreSQL: completion rule, leases, retries,
dead letters, admin, and several processes working the table at once."""

import logging
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, inspect, select, update

import dicomnode.db.engine as engine_module
import dicomnode.db.jobs as jobs_module
import dicomnode.pipeline.runner as runner_module
from dicomnode.config import RetrySettings, Settings
from dicomnode.db import (
    Database,
    DeliveryStatus,
    JobRecord,
    JobStatus,
    ReceivedInstance,
    open_database,
)
from dicomnode.db.admin import cancel_job, resend_job, retry_job
from dicomnode.db.failed_deliveries import bring_failed_forward, destinations_waited_for
from dicomnode.db.instances import create_jobs_for_quiet_series, record_instance
from dicomnode.db.jobs import (
    claim_next_job,
    finish_attempt,
    get_job,
    job_inputs,
    list_jobs,
    reclaim_expired_leases,
    record_delivery,
    record_job_details,
    reports_made_before,
)
from dicomnode.db.models import Job, Series, utcnow
from dicomnode.db.models_wait import clear_models_wait, note_models_wait
from dicomnode.db.originals_first import (
    originals_owed,
    waits_for_originals,
    wake_derived,
)
from dicomnode.db.retention import purgeable_series
from dicomnode.db.stats import queue_snapshot
from dicomnode.db.transitions import MAX_PROCESSING_ATTEMPTS, not_configured
from dicomnode.errors import JobStateError
from dicomnode.pipeline.delivery import DeliveryQueues
from dicomnode.pipeline.runner import JobRunner
from dicomnode.spool import Spool
from dicomnode.status import JobPart
from tests.conftest import ON_BOTH_DATABASES

pytestmark = ON_BOTH_DATABASES

FAST_RETRY = RetrySettings(max_attempts=3, initial_delay_seconds=0, max_delay_seconds=0, jitter=0)

ORIGINALS_ONLY = [JobPart.ORIGINALS]
# Retries enough to outlast MAX_PROCESSING_ATTEMPTS, at once
PATIENT = RetrySettings(max_attempts=80, initial_delay_seconds=0, max_delay_seconds=0, jitter=0)


def receive(db: Database, series_uid: str, count: int, study_uid: str = "1.2.3") -> list[str]:
    uids = [generate_uid() for _ in range(count)]
    for uid in uids:
        record_instance(
            db,
            ReceivedInstance(
                uid,
                "1.2.840.10008.5.1.4.1.1.2",
                "1.2.840.10008.1.2.1",
                study_uid,
                series_uid,
                "CT",
                Path(f"/spool/{uid}.dcm"),
                1000,
                "MODALITY",
            ),
        )
    return uids


def test_series_becomes_one_job_only_after_it_is_quiet(db: Database) -> None:
    receive(db, "1.2.3.4", 5)
    assert (
        create_jobs_for_quiet_series(
            db, quiet_seconds=60, destinations=["pacs"], parts=ORIGINALS_ONLY
        )
        == []
    )
    [job_id] = create_jobs_for_quiet_series(
        db, quiet_seconds=0, destinations=["pacs", "ai"], parts=ORIGINALS_ONLY
    )
    job = get_job(db, job_id)
    assert job is not None
    assert (job.status, job.instances, job.series_uid) == ("queued", 5, "1.2.3.4")
    assert [(d.destination, d.status) for d in job.deliveries] == [
        ("pacs", "pending"),
        ("ai", "pending"),
    ]
    assert (
        create_jobs_for_quiet_series(
            db, quiet_seconds=0, destinations=["pacs"], parts=ORIGINALS_ONLY
        )
        == []
    )


def test_late_instance_makes_a_new_job_that_supersedes_the_unstarted_one(db: Database) -> None:
    receive(db, "1.2.3.5", 2)
    [first] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    receive(db, "1.2.3.5", 1)
    [second] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    old, new = get_job(db, first), get_job(db, second)
    assert old is not None and new is not None
    assert old.status == "cancelled" and old.error == f"superseded by job {second}"
    assert new.instances == 3


def test_claim_takes_a_lease_and_a_second_claim_finds_nothing(db: Database) -> None:
    receive(db, "1.2.3.6", 3)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    job = claim_next_job(db, "worker-a", lease_seconds=60, part=JobPart.ORIGINALS)
    assert job is not None and job.id == job_id
    assert (job.status, job.attempts, job.lease_owner) == ("processing", 1, "worker-a")
    assert len(job_inputs(db, job_id)) == 3
    assert claim_next_job(db, "worker-b", lease_seconds=60, part=JobPart.ORIGINALS) is None


def test_expired_lease_is_reclaimed_and_the_dead_workers_result_is_discarded(db: Database) -> None:
    receive(db, "1.2.3.7", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "crashed-worker", lease_seconds=0.01, part=JobPart.ORIGINALS)
    time.sleep(0.05)
    assert reclaim_expired_leases(db, max_attempts=3) == [job_id]
    job = claim_next_job(db, "new-worker", lease_seconds=60, part=JobPart.ORIGINALS)
    assert job is not None and job.attempts == 1  # the lapsed one is not held against it
    assert finish_attempt(db, job_id, "crashed-worker", FAST_RETRY) is None
    assert get_job(db, job_id).lease_owner == "new-worker"  # type: ignore[union-attr]


def test_an_attempt_that_lost_its_lease_cannot_write_over_the_delivery_of_the_next(
    db: Database,
) -> None:
    """An attempt whose lease lapsed may still finish sending; its outcome went into the
    delivery row of the attempt that took the job over, which was then judged by it (a job
    that delivered everything failed and was sent again)."""
    receive(db, "1.2.3.15", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "paused-worker", lease_seconds=0.01, part=JobPart.ORIGINALS)
    time.sleep(0.05)
    assert reclaim_expired_leases(db, max_attempts=3) == [job_id]
    assert claim_next_job(db, "new-worker", lease_seconds=60, part=JobPart.ORIGINALS)

    assert record_delivery(db, job_id, "new-worker", "pacs", DeliveryStatus.DONE, 1, None)
    stale = "connection reset"
    assert not record_delivery(db, job_id, "paused-worker", "pacs", DeliveryStatus.FAILED, 0, stale)

    result = finish_attempt(db, job_id, "new-worker", FAST_RETRY)
    assert result is not None and result.status == "done", result.error
    assert [(d.status, d.error) for d in result.deliveries] == [("done", None)]


def test_a_job_whose_worker_dies_every_time_goes_dead_instead_of_looping(db: Database) -> None:
    receive(db, "1.2.3.14", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    for _ in range(2):
        claim_next_job(db, "doomed-worker", lease_seconds=0.01, part=JobPart.ORIGINALS)
        time.sleep(0.05)
        assert reclaim_expired_leases(db, max_attempts=2) == [job_id]
    job = get_job(db, job_id)
    assert job is not None and job.status == "dead"
    assert "worker stopped" in (job.error or "") and job.deliveries[0].status == "dead"
    assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is None


def test_an_attempt_cut_short_is_not_held_against_a_job_only_its_lapses_are(
    db: Database,
) -> None:
    """Attempt 1 found the PACS down; attempt 2, the last, was cut short (the node was stopped
    while another PACS hung): the job gets its last attempt again instead of going dead as "its
    worker stopped during each of 2 attempts". Lapses are bounded on their own, counted from an
    admin's last retry."""
    receive(db, "1.2.3.17", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    retry = RetrySettings(max_attempts=2, initial_delay_seconds=0, max_delay_seconds=0, jitter=0)

    def claim(lease_seconds: float = 60) -> None:
        claimed = claim_next_job(db, "w", lease_seconds=lease_seconds, part=JobPart.ORIGINALS)
        assert claimed is not None and claimed.id == job_id

    def lapse() -> None:
        claim(lease_seconds=0.01)
        time.sleep(0.05)
        assert reclaim_expired_leases(db, max_attempts=2) == [job_id]

    def fail() -> JobRecord:
        claim()
        assert record_delivery(db, job_id, "w", "pacs", DeliveryStatus.FAILED, 0, "refused")
        result = finish_attempt(db, job_id, "w", retry)
        assert result is not None
        return result

    assert fail().status == "failed"
    lapse()
    assert (get_job(db, job_id).status, get_job(db, job_id).attempts) == ("queued", 1)  # type: ignore[union-attr]
    dead = fail()  # the last attempt, given again
    assert dead.status == "dead" and "gave up after 2 attempts" in (dead.error or "")

    retry_job(db, job_id, ["pacs"])  # the lapse before it no longer counts
    lapse()
    assert get_job(db, job_id).status == "queued"  # type: ignore[union-attr]
    lapse()  # two lapses since the retry: max_attempts of them
    job = get_job(db, job_id)
    assert job is not None and job.status == "dead"
    assert "worker stopped (crash, kill or out of memory) during 2 of its attempts" in job.error


def test_transient_failures_retry_then_go_dead_and_retry_revives(db: Database) -> None:
    receive(db, "1.2.3.8", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs", "backup"], parts=ORIGINALS_ONLY)
    for attempt in range(1, 4):
        job = claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
        assert job is not None and job.attempts == attempt
        record_delivery(db, job_id, "w", "backup", DeliveryStatus.DONE, 1, None)
        record_delivery(db, job_id, "w", "pacs", DeliveryStatus.FAILED, 0, "peer down")
        result = finish_attempt(db, job_id, "w", FAST_RETRY)
        assert result is not None
        expected = JobStatus.FAILED if attempt < 3 else JobStatus.DEAD
        assert result.status == expected, result.error
    assert "gave up after 3 attempts" in (result.error or "")
    assert {d.destination: d.status for d in result.deliveries} == {
        "pacs": "dead",
        "backup": "done",
    }
    revived = retry_job(db, job_id, ["pacs", "backup"])
    assert (revived.status, revived.attempts) == ("queued", 0)
    assert {d.destination: d.status for d in revived.deliveries} == {
        "pacs": "pending",
        "backup": "done",
    }


def assert_dead_after_max_failures_before_delivery(db: Database, job_id: int) -> None:
    """Failed at each of MAX_PROCESSING_ATTEMPTS failures before delivery, dead at the last."""
    for attempt in range(1, MAX_PROCESSING_ATTEMPTS + 1):
        assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
        result = finish_attempt(db, job_id, "w", PATIENT, error="the spool is not there")
        assert result is not None
        expected = "failed" if attempt < MAX_PROCESSING_ATTEMPTS else "dead"
        assert result.status == expected, (attempt, result.error)


def test_a_job_past_a_days_outage_is_not_dead_at_its_first_failure_before_delivery(
    db: Database,
) -> None:
    """Only attempts that ended before delivery count towards MAX_PROCESSING_ATTEMPTS: a job
    whose PACS was down for ten attempts was dead at its first unreadable input."""
    receive(db, "1.2.3.18", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    for _ in range(MAX_PROCESSING_ATTEMPTS + 2):
        assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
        assert record_delivery(db, job_id, "w", "pacs", DeliveryStatus.FAILED, 0, "peer down")
        assert finish_attempt(db, job_id, "w", PATIENT).status == "failed"  # type: ignore[union-attr]
    assert_dead_after_max_failures_before_delivery(db, job_id)


def test_after_an_admins_retry_failures_before_delivery_count_from_the_first(
    db: Database,
) -> None:
    """A delivery done before the retry keeps its attempts; they must not hide the failures
    before delivery that follow it from MAX_PROCESSING_ATTEMPTS."""
    receive(db, "1.2.3.19", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs", "archive"], parts=ORIGINALS_ONLY)
    policy = RetrySettings(max_attempts=5, initial_delay_seconds=0, max_delay_seconds=0, jitter=0)
    for attempt in range(1, 6):  # "pacs" took it at once; "archive" is down throughout
        assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
        if attempt == 1:
            assert record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DONE, 1, None)
        assert record_delivery(db, job_id, "w", "archive", DeliveryStatus.FAILED, 0, "down")
        last = finish_attempt(db, job_id, "w", policy)
    assert last is not None and last.status == "dead"
    retry_job(db, job_id, ["pacs", "archive"])
    assert_dead_after_max_failures_before_delivery(db, job_id)


@pytest.mark.parametrize("action", ["retry", "resend"])
def test_an_admins_retry_or_resend_counts_failures_before_delivery_anew(
    db: Database, action: str
) -> None:
    """7 failures before delivery, then an admin's action: the job gets its 8 again, not 1."""
    receive(db, f"1.2.3.20.{len(action)}", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)

    def fail_before_delivery() -> str:
        assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
        result = finish_attempt(db, job_id, "w", PATIENT, error="the model would not load")
        assert result is not None
        return result.status

    assert [fail_before_delivery() for _ in range(7)] == ["failed"] * 7
    if action == "retry":
        retry_job(db, job_id, ["pacs"])
    else:  # a resend follows a job done at last
        assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
        assert record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DONE, 1, None)
        assert finish_attempt(db, job_id, "w", PATIENT).status == "done"  # type: ignore[union-attr]
        resend_job(db, job_id, ["pacs"])
    statuses = [fail_before_delivery() for _ in range(MAX_PROCESSING_ATTEMPTS)]
    assert statuses == ["failed"] * (MAX_PROCESSING_ATTEMPTS - 1) + ["dead"]


def _dead_for_a_destination_the_node_did_not_have(db: Database, series: str, name: str) -> int:
    """A job that reached "pacs" and ended dead for `name`, which the running node lacked."""
    receive(db, series, 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs", name], parts=ORIGINALS_ONLY)
    assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
    assert record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DONE, 1, None)
    missing = not_configured(name, job_id)
    assert record_delivery(db, job_id, "w", name, DeliveryStatus.DEAD, 0, missing)
    dead = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert (
        dead is not None and dead.status == "dead" and f"jobs retry {job_id}" in (dead.error or "")
    )
    return job_id


def test_a_retry_drops_a_delivery_to_a_destination_the_node_no_longer_has(db: Database) -> None:
    """A destination taken out of the settings left its jobs dead for good: a retry sent to it
    again, and the node found it missing again. The node's own finding is what is dropped."""
    job_id = _dead_for_a_destination_the_node_did_not_have(db, "1.2.3.21", "old")
    retried = retry_job(db, job_id, ["pacs"])
    assert [d.destination for d in retried.deliveries] == ["pacs"]
    assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is not None
    done = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert done is not None and done.status == "done"
    [event] = [e for e in retried.history if e.kind == "retry"]
    assert "dropped the deliveries to 'old'" in (event.detail or "")


def test_a_retry_sends_to_a_destination_put_in_after_the_node_started(db: Database) -> None:
    """An admin added a destination, sent a job there before restarting the node (which found
    it missing), then restarted: the settings name it now, so a retry sends there, not drops."""
    job_id = _dead_for_a_destination_the_node_did_not_have(db, "1.2.3.22", "new")
    retried = retry_job(db, job_id, ["pacs", "new"])
    states = {d.destination: d.status for d in retried.deliveries}
    assert states == {"pacs": DeliveryStatus.DONE, "new": DeliveryStatus.PENDING}
    [event] = [e for e in retried.history if e.kind == "retry"]
    assert "dropped" not in (event.detail or "")


def test_failed_job_waits_for_its_backoff(db: Database) -> None:
    receive(db, "1.2.3.9", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, job_id, "w", "pacs", DeliveryStatus.FAILED, 0, "peer down")
    slow = RetrySettings(max_attempts=5, initial_delay_seconds=3600, jitter=0)
    result = finish_attempt(db, job_id, "w", slow)
    assert result is not None and result.status == "failed"
    assert "(attempt 1, the next 3600 s after it)" in (result.error or "")
    assert claim_next_job(db, "w", 60, part=JobPart.ORIGINALS) is None


def test_permanent_failure_is_dead_at_once(db: Database) -> None:
    receive(db, "1.2.3.10", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DEAD, 0, "0xA900 for sop=1")
    result = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert result is not None and result.status == "dead" and result.attempts == 1
    assert result.error == "pacs: 0xA900 for sop=1"


def test_a_destination_that_refused_for_good_does_not_stop_retries_of_one_that_was_down(
    db: Database,
) -> None:
    receive(db, "1.2.3.13", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs", "backup"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, job_id, "w", "pacs", DeliveryStatus.DEAD, 0, "0xC000 for sop=1")
    record_delivery(db, job_id, "w", "backup", DeliveryStatus.FAILED, 0, "connection refused")
    result = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert result is not None and result.status == "failed", result
    job = claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    assert job is not None and job.attempts == 2
    record_delivery(db, job_id, "w", "backup", DeliveryStatus.DONE, 1, None)
    result = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert result is not None and result.status == "dead"
    assert result.error == "pacs: 0xC000 for sop=1"
    assert {d.destination: d.status for d in result.deliveries} == {
        "pacs": "dead",
        "backup": "done",
    }


def test_a_delivery_whose_outcome_was_never_recorded_is_not_taken_for_success(
    db: Database,
) -> None:
    receive(db, "1.2.3.16", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs", "backup"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    record_delivery(db, job_id, "w", "backup", DeliveryStatus.DONE, 1, None)  # "pacs" crashed
    result = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert result is not None and result.status == "failed"
    assert "pacs: delivery outcome not recorded" in (result.error or "")


def test_a_failed_attempt_is_not_retried_when_a_newer_job_has_the_series(db: Database) -> None:
    receive(db, "1.2.3.17", 2)
    [first] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    receive(db, "1.2.3.17", 1)  # a late instance while the first job is being forwarded
    [second] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    record_delivery(db, first, "w", "pacs", DeliveryStatus.FAILED, 0, "peer down")
    result = finish_attempt(db, first, "w", FAST_RETRY)
    assert result is not None and result.status == "cancelled"
    assert (result.error or "").startswith(f"superseded by job {second} (this attempt: pacs: peer")
    newer = get_job(db, second)
    assert newer is not None and (newer.status, newer.instances) == ("queued", 3)


def test_cancel_and_retry_refuse_what_the_state_does_not_allow(db: Database) -> None:
    receive(db, "1.2.3.11", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, [], parts=ORIGINALS_ONLY)
    with pytest.raises(JobStateError, match="only dead, failed, cancelled"):
        retry_job(db, job_id, ["pacs"])
    assert cancel_job(db, job_id).status == "cancelled"
    with pytest.raises(JobStateError, match="already cancelled"):
        cancel_job(db, job_id)
    with pytest.raises(JobStateError, match="job 999 does not exist"):
        cancel_job(db, 999)


def test_job_without_destinations_is_stored_and_never_purgeable(db: Database) -> None:
    receive(db, "1.2.3.12", 2)
    [job_id] = create_jobs_for_quiet_series(db, 0, [], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    result = finish_attempt(db, job_id, "w", FAST_RETRY)
    assert result is not None and result.status == "stored"
    assert result.error is not None and "sent nowhere" in result.error
    assert purgeable_series(db, utcnow() + timedelta(days=1)) == []  # sent nowhere: kept


def test_job_without_destinations_of_a_receive_only_node_is_done(db: Database) -> None:
    receive(db, "1.2.3.13", 2)
    [job_id] = create_jobs_for_quiet_series(db, 0, [], parts=ORIGINALS_ONLY)
    claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
    result = finish_attempt(db, job_id, "w", FAST_RETRY, receive_only=True)
    assert result is not None and result.status == "done" and result.error is None
    assert purgeable_series(db, utcnow() + timedelta(days=1)) == ["1.2.3.13"]


def test_a_database_from_an_older_version_gets_the_new_columns(
    tmp_path: Path, database_url: str
) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'old.sqlite'}"
    db = open_database(url)
    receive(db, "1.2.3.15", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    with db.engine.begin() as connection:  # what the first release's jobs table looked like
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN details")
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN released")
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN failures_before_delivery")
    db.dispose()

    upgraded = open_database(url)
    job = get_job(upgraded, job_id)
    assert job is not None and job.details is None and job.released is False
    assert claim_next_job(upgraded, "w", 60, part=JobPart.ORIGINALS) is not None
    failed = finish_attempt(upgraded, job_id, "w", FAST_RETRY, error="unreadable input")
    assert failed is not None and failed.status == "failed"
    with upgraded.session() as session:  # the new count started at 0 and counted this one
        assert session.get(Job, job_id).failures_before_delivery == 1  # type: ignore[union-attr]
    upgraded.dispose()


def test_a_database_from_an_older_version_gets_the_new_tables_and_says_so(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'old.sqlite'}"
    open_database(url).dispose()
    with caplog.at_level(logging.WARNING):
        open_database(url).dispose()  # up to date: says nothing
        db = open_database(url)
        with db.engine.begin() as connection:  # as a database from before the table
            connection.exec_driver_sql("DROP TABLE delivered_instances")
        db.dispose()
        assert not [r for r in caplog.records if "schema upgraded" in r.getMessage()]
        upgraded = open_database(url)
    assert inspect(upgraded.engine).has_table("delivered_instances")
    upgraded.dispose()
    said = [r.getMessage() for r in caplog.records if "schema upgraded" in r.getMessage()]
    assert said == ["database schema upgraded: added table delivered_instances"]


def test_a_database_from_an_older_version_gets_the_new_indexes(
    tmp_path: Path, database_url: str
) -> None:
    """Without the index by instance, purging one series of a year-old database held the write
    lock for seconds (every link read per instance row deleted): stores were refused meanwhile.
    An index added since must reach a database made before it."""
    url = database_url or f"sqlite:///{tmp_path / 'old.sqlite'}"
    db = open_database(url)
    receive(db, "1.2.3.16", 2)
    with db.engine.begin() as connection:  # as a database from before the indexes
        for index in ("ix_job_instances_sop", "ix_instances_received_at", "ix_commitments_state"):
            connection.exec_driver_sql(f"DROP INDEX {index}")
    db.dispose()

    upgraded = open_database(url)
    inspector = inspect(upgraded.engine)
    assert "ix_job_instances_sop" in {i["name"] for i in inspector.get_indexes("job_instances")}
    assert "ix_instances_received_at" in {i["name"] for i in inspector.get_indexes("instances")}
    assert "ix_commitments_state" in {i["name"] for i in inspector.get_indexes("commitments")}
    if upgraded.is_sqlite:  # and SQLite uses it to find an instance's links
        with upgraded.engine.connect() as connection:
            plan = connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT job_id FROM job_instances WHERE sop_instance_uid = 'x'"
            ).all()
        assert "USING INDEX ix_job_instances_sop" in str(plan), plan
    upgraded.dispose()


BOTH_PARTS = [JobPart.ORIGINALS, JobPart.DERIVED]


def test_a_series_gets_one_job_per_part_each_claimed_only_by_its_own_runners(
    db: Database,
) -> None:
    receive(db, "1.2.3.40", 3)
    originals, derived = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    records = {job_id: get_job(db, job_id) for job_id in (originals, derived)}
    assert [(r.part, r.instances) for r in records.values() if r] == [
        ("originals", 3),
        ("derived", 3),
    ]
    # the derived job is older in no queue: a router never takes it, a worker never the other
    claimed = claim_next_job(db, "router", 60, part=JobPart.ORIGINALS)
    assert claimed is not None and claimed.id == originals
    assert claim_next_job(db, "router", 60, part=JobPart.ORIGINALS) is None
    claimed = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
    assert claimed is not None and claimed.id == derived


AN_HOUR_OFF = RetrySettings(max_attempts=5, initial_delay_seconds=3600, jitter=0)


def originals_failed_an_hour_off(db: Database, series_uid: str, error: str) -> tuple[int, int]:
    """A series' two jobs (originals, derived), its originals failed at "pacs" with `error`,
    their next attempt an hour away; the derived job not yet claimed."""
    receive(db, series_uid, 2)
    originals, derived = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    claim_next_job(db, "router", 60, part=JobPart.ORIGINALS)
    record_delivery(db, originals, "router", "pacs", DeliveryStatus.FAILED, 0, error)
    finish_attempt(db, originals, "router", AN_HOUR_OFF)
    return originals, derived


def test_a_derived_job_waiting_for_its_originals_is_due_once_they_arrive_even_as_it_ends(
    db: Database,
) -> None:
    """After an outage the derived series waits at a destination for its originals, and
    their arrival makes the derived job due, also when they arrive between its waiting
    delivery and the end of its attempt."""
    slow = AN_HOUR_OFF
    originals, derived = originals_failed_an_hour_off(db, "1.2.3.45", "peer down")
    assert claim_next_job(db, "router", 60, part=JobPart.ORIGINALS) is None  # an hour away

    claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
    assert originals_owed(db, "1.2.3.45", "pacs") == originals
    assert originals_owed(db, "1.2.3.45", "backup") is None  # never meant for it
    waiting = waits_for_originals(originals, "pacs")
    record_delivery(db, derived, "worker", "pacs", DeliveryStatus.FAILED, 0, waiting)
    reschedule(db, originals, seconds_ago=1)  # their own backoff passed (or the probe)
    retried = claim_next_job(db, "router", 60, part=JobPart.ORIGINALS)
    assert retried is not None and (retried.id, retried.attempts) == (originals, 2)
    record_delivery(db, originals, "router", "pacs", DeliveryStatus.DONE, 2, None)
    wake_derived(db, "1.2.3.45", "pacs")  # before the derived attempt ended: nothing to wake
    result = finish_attempt(db, derived, "worker", slow)
    assert result is not None and result.status == "failed"
    assert (result.error or "").startswith(
        f"pacs: waits for the originals of its series (job {originals})"
    )
    again = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)  # due now, not in an hour
    assert again is not None and again.id == derived
    assert originals_owed(db, "1.2.3.45", "pacs") is None

    # An attempt that failed at the PACS itself, not waiting: only the originals' arrival wakes it.
    record_delivery(db, derived, "worker", "pacs", DeliveryStatus.FAILED, 0, "peer down")
    finish_attempt(db, derived, "worker", slow)
    assert claim_next_job(db, "worker", 60, part=JobPart.DERIVED) is None
    wake_derived(db, "1.2.3.45", "pacs")
    woken = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
    assert woken is not None and (woken.id, woken.attempts) == (derived, 2)  # the wait: none


def reschedule(db: Database, job_id: int, seconds_ago: float) -> None:
    """Job `job_id` was due `seconds_ago` (its backoff has passed)."""
    with db.session() as session:
        due = utcnow() - timedelta(seconds=seconds_ago)
        session.execute(update(Job).where(Job.id == job_id).values(next_attempt_at=due))


def test_a_derived_job_that_waits_for_its_originals_spends_no_attempt_and_looks_after_them(
    db: Database,
) -> None:
    """A PACS down for days: the derived job waits there as long as its originals are
    retried, without spending its own attempts, and looks again after their next attempt (not
    on a shorter backoff of its own)."""
    policy = RetrySettings(max_attempts=2, initial_delay_seconds=1, jitter=0)
    originals, derived = originals_failed_an_hour_off(db, "1.2.3.48", "peer down")
    originals_due = get_job(db, originals)
    assert originals_due is not None and originals_due.next_attempt_at is not None
    for _ in range(3):  # more waits than it has attempts
        claimed = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
        assert claimed is not None and (claimed.id, claimed.attempts) == (derived, 1)
        waiting = waits_for_originals(originals, "pacs")
        record_delivery(db, derived, "worker", "pacs", DeliveryStatus.FAILED, 0, waiting)
        result = finish_attempt(db, derived, "worker", policy)
        assert result is not None and (result.status, result.attempts) == ("failed", 0)
        assert "not counted as an attempt: 0 of 2 so far" in (result.error or "")
        assert result.next_attempt_at == originals_due.next_attempt_at  # not in 1 s
        assert claim_next_job(db, "worker", 60, part=JobPart.DERIVED) is None
        reschedule(db, derived, seconds_ago=1)  # the hour passes
    # the originals are due again (as when the probe found the destination back): the waits
    # back off as the delivery's tries do, and leave the originals' schedule as it is
    reschedule(db, originals, seconds_ago=1)
    due = get_job(db, originals)
    assert due is not None
    before = utcnow()
    for tries, delay in ((4, 8), (5, 16)):
        claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
        record_delivery(db, derived, "worker", "pacs", DeliveryStatus.FAILED, 0, waiting)
        result = finish_attempt(db, derived, "worker", policy)
        assert result is not None and result.attempts == 0
        assert result.deliveries[0].attempts == tries
        assert timedelta(seconds=delay) <= result.next_attempt_at - before
        assert result.next_attempt_at - before < timedelta(seconds=delay + 30)
        reschedule(db, derived, seconds_ago=1)
        still = get_job(db, originals)
        assert still is not None and still.next_attempt_at == due.next_attempt_at
    # the originals are given up: nothing is owed, the derived job goes on its own
    assert claim_next_job(db, "router", 60, part=JobPart.ORIGINALS) is not None
    record_delivery(db, originals, "router", "pacs", DeliveryStatus.FAILED, 0, "peer down")
    given_up = finish_attempt(db, originals, "router", RetrySettings(max_attempts=1))
    assert given_up is not None and given_up.status == "dead"
    assert originals_owed(db, "1.2.3.48", "pacs") is None
    goes = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
    assert goes is not None and (goes.id, goes.attempts) == (derived, 1)


def test_queued_derived_jobs_say_why_they_wait_while_the_models_do_not_load(
    db: Database,
) -> None:
    """Only queued derived jobs without another error get the note; a newer reason replaces
    it; once the models load it goes, and nothing else does."""
    receive(db, "1.2.3.49", 2)
    originals, derived = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    receive(db, "1.2.3.50", 2)
    _, queued = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    claim_next_job(db, "worker", 60, part=JobPart.DERIVED)  # the older series' derived job
    finish_attempt(db, derived, "worker", FAST_RETRY, error="disk full")  # failed, its own error

    def error_of(job_id: int) -> str | None:
        job = get_job(db, job_id)
        assert job is not None
        return job.error

    assert note_models_wait(db, "cannot load srcnn-x1.keras (w tries again)") == 1
    assert note_models_wait(db, "cannot load srcnn-x1.keras (w tries again)") == 0  # said
    assert note_models_wait(db, "out of GPU memory") == 1
    assert error_of(originals) is None
    assert (error_of(derived) or "").startswith("disk full")
    assert error_of(queued) == "waits for a worker whose models load (out of GPU memory)"

    assert clear_models_wait(db) == 1
    assert error_of(queued) is None
    assert (error_of(derived) or "").startswith("disk full")


def test_the_reports_made_before_are_those_of_the_series_earlier_derived_jobs(db: Database) -> None:
    """A series that grew gets a report of another UID, which names those made before
    (`reports_made_before`): of every earlier derived job, one that failed too (a retry or a
    release may still send it)."""

    def derived_job_with_report(sop: str, delivered: DeliveryStatus) -> int:
        receive(db, "1.2.3.51", 1)
        _, derived = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
        claimed = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
        assert claimed is not None and claimed.id == derived
        method = {"report_series_uid": "9.9.1", "report_sop_uid": sop}
        assert record_job_details(db, derived, "worker", {"methods": [method]})
        record_delivery(db, derived, "worker", "pacs", delivered, 1, None)
        finish_attempt(db, derived, "worker", FAST_RETRY)
        return derived

    first = derived_job_with_report("9.9.1.1", DeliveryStatus.DONE)
    second = derived_job_with_report("9.9.1.2", DeliveryStatus.FAILED)
    third = derived_job_with_report("9.9.1.3", DeliveryStatus.DONE)
    assert reports_made_before(db, "1.2.3.51", first) == {}
    assert reports_made_before(db, "1.2.3.51", third) == {"9.9.1": ["9.9.1.1", "9.9.1.2"]}
    everything = ["9.9.1.1", "9.9.1.2", "9.9.1.3"]
    assert reports_made_before(db, "1.2.3.51", third + 1) == {"9.9.1": everything}
    assert reports_made_before(db, "1.2.3.99", third + 1) == {}
    assert second == first + 2
    # details an older node wrote, without the report's UIDs, name nothing (and fail nothing)
    with db.session() as session:
        session.execute(update(Job).where(Job.id == first).values(details='{"methods": [{}]}'))
    assert reports_made_before(db, "1.2.3.51", third + 1) == {"9.9.1": ["9.9.1.2", "9.9.1.3"]}


def test_a_derived_series_does_not_wait_at_a_destination_that_has_some_of_its_originals(
    db: Database,
) -> None:
    """Some originals are there (others unreadable for now, or Storage Commitment reports
    lost): the derived series goes beside them rather than wait for days."""
    receive(db, "1.2.3.46", 2)
    originals, _ = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    claim_next_job(db, "router", 60, part=JobPart.ORIGINALS)
    record_delivery(db, originals, "router", "pacs", DeliveryStatus.FAILED, 1, "1 unreadable")
    finish_attempt(db, originals, "router", FAST_RETRY)
    assert originals_owed(db, "1.2.3.46", "pacs") is None


def test_a_destination_that_is_back_brings_forward_what_failed_there_while_it_was_down(
    db: Database,
) -> None:
    """Only failed jobs whose delivery there failed by the probe that found it down; not a
    derived job that only waited for its originals (their arrival brings it forward)."""
    slow = AN_HOUR_OFF
    originals, derived = originals_failed_an_hour_off(db, "1.2.3.47", "refused")
    claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
    waiting = waits_for_originals(originals, "pacs")
    record_delivery(db, derived, "worker", "pacs", DeliveryStatus.FAILED, 0, f"refused; {waiting}")
    finish_attempt(db, derived, "worker", slow)
    at, names = destinations_waited_for(db)
    assert names == {"pacs"}

    assert bring_failed_forward(db, "pacs", failed_by=at - timedelta(minutes=5)) == 0  # later
    assert bring_failed_forward(db, "backup", failed_by=at) == 0
    assert bring_failed_forward(db, "pacs", failed_by=at) == 1
    retried = claim_next_job(db, "router", 60, part=JobPart.ORIGINALS)
    assert retried is not None and retried.id == originals
    assert claim_next_job(db, "worker", 60, part=JobPart.DERIVED) is None


def test_a_late_instance_supersedes_the_waiting_job_of_the_same_part_only(db: Database) -> None:
    receive(db, "1.2.3.41", 2)
    first_originals, first_derived = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    claim_next_job(db, "router", 60, part=JobPart.ORIGINALS)  # the originals are on their way
    receive(db, "1.2.3.41", 1)
    second_originals, second_derived = create_jobs_for_quiet_series(
        db, 0, ["pacs"], parts=BOTH_PARTS
    )
    statuses = {
        job_id: (job.status if (job := get_job(db, job_id)) else None)
        for job_id in (first_originals, first_derived, second_originals, second_derived)
    }
    assert statuses == {
        first_originals: "processing",  # started: it finishes, the new one sends all again
        first_derived: "cancelled",
        second_originals: "queued",
        second_derived: "queued",
    }
    # the running originals job fails: it is superseded by the newer originals job, not retried
    record_delivery(db, first_originals, "router", "pacs", DeliveryStatus.FAILED, 0, "peer down")
    result = finish_attempt(db, first_originals, "router", FAST_RETRY)
    assert result is not None and result.status == "cancelled"
    assert result.error is not None and f"superseded by job {second_originals}" in result.error


def test_several_processes_ticking_at_once_make_one_job_per_series_and_claim_each_once(
    db: Database,
) -> None:
    series = [f"1.2.3.50.{index}" for index in range(20)]
    for uid in series:
        receive(db, uid, 2)
    processes = [open_database(db.url) for _ in range(4)]  # each its own engine and connections
    start = threading.Barrier(len(processes))

    def tick(index: int) -> tuple[list[int], list[int], list[int]]:
        process = processes[index]
        start.wait()
        created = create_jobs_for_quiet_series(process, 0, ["pacs"], parts=BOTH_PARTS)
        start.wait()
        claimed = []
        while job := claim_next_job(process, f"process{index}", 0.01, part=JobPart.DERIVED):
            claimed.append(job.id)
        start.wait()
        time.sleep(0.05)  # every lease has lapsed: all of them reap at once
        return created, claimed, reclaim_expired_leases(process, max_attempts=3)

    try:
        with ThreadPoolExecutor(len(processes)) as pool:
            results = list(pool.map(tick, range(len(processes))))
    finally:
        for process in processes:
            process.dispose()
    created, claimed, reaped = ([i for result in results for i in result[n]] for n in range(3))
    jobs = list_jobs(db, limit=1000)
    assert sorted(created) == sorted(job.id for job in jobs)
    assert Counter((job.series_uid, job.part) for job in jobs) == {
        (uid, part): 1 for uid in series for part in BOTH_PARTS
    }
    derived = sorted(job.id for job in jobs if job.part == JobPart.DERIVED)
    assert sorted(claimed) == derived and sorted(reaped) == derived
    assert {job.status for job in jobs if job.part == JobPart.DERIVED} == {"queued"}
    assert {job.claims for job in jobs if job.part == JobPart.DERIVED} == {1}
    assert {job.attempts for job in jobs if job.part == JobPart.DERIVED} == {
        0
    }  # reaped: given back


def _open_together(url: str, processes: int = 4) -> list[Database]:
    """`open_database(url)` from `processes` threads at once, as a compose file starts a listener
    and its workers."""
    start = threading.Barrier(processes)

    def open_one(_: int) -> Database:
        start.wait()
        return open_database(url)

    with ThreadPoolExecutor(processes) as pool:
        return list(pool.map(open_one, range(processes)))


def test_processes_starting_together_on_an_empty_database_all_open_it(
    tmp_path: Path, database_url: str
) -> None:
    # On SQLite the race (connections switching a new file to WAL) was lost about once in a
    # hundred starts: many empty files, so that the test fails where the code is wrong.
    files = [f"sqlite:///{tmp_path / f'{n}.sqlite'}" for n in range(40)]
    for url in [database_url] if database_url else files:
        for database in _open_together(url):
            assert list_jobs(database) == []
            database.dispose()


def test_a_job_made_while_a_runner_looks_is_taken_by_the_same_tick(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion tick wakes the runners when it makes jobs; a runner tick already under
    way (the scheduler starts no second one beside it) may have looked just before the job
    was committed: woken, it looks once more instead of leaving the job to its next poll."""
    settings = Settings()
    runner = JobRunner(
        settings,
        db,
        Spool(tmp_path / "spool"),
        "w",
        DeliveryQueues(settings, db),
        JobPart.ORIGINALS,
    )
    ran: list[int] = []
    monkeypatch.setattr(runner, "run", lambda job: ran.append(job.id))
    receive(db, "1.2.3.4", 2)
    made: list[int] = []

    def claim_then_a_job_is_made(*args, **kwargs):  # type: ignore[no-untyped-def]
        claimed = claim_next_job(*args, **kwargs)
        if claimed is None and not made:  # the completion tick, just after this look
            made.extend(create_jobs_for_quiet_series(db, 0, ["pacs"], ORIGINALS_ONLY))
            runner.wake()
        return claimed

    monkeypatch.setattr(runner_module, "claim_next_job", claim_then_a_job_is_made)
    assert runner.run_due_jobs() == 1
    assert ran == made and len(made) == 1
    assert runner.run_due_jobs() == 0  # nothing made since: one look


def test_reports_and_scans_for_work_read_while_a_store_holds_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The metrics' counts and retention's scan only read: they take no write lock (before, each
    began with BEGIN IMMEDIATE, and on a year's database a scrape or the hourly scan held up
    the C-STOREs for seconds), so they go on while a store is writing, as it does while they
    read."""
    if database_url:
        pytest.skip("SQLite's one writer; PostgreSQL's readers never wait for writers")
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_SECONDS", 2)
    db = open_database(f"sqlite:///{tmp_path / 'node.sqlite'}")
    receive(db, "1.2.3.60", 2)
    writer = sqlite3.connect(tmp_path / "node.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a store's transaction, under way
    writer.execute("UPDATE series SET pending = pending")
    try:
        started = time.monotonic()
        snapshot = queue_snapshot(db)
        assert purgeable_series(db, utcnow()) == []
        assert time.monotonic() - started < 1.5  # no wait for the lock (2 s: "locked")
        assert snapshot.queued == 0 and snapshot.jobs == {}
    finally:
        writer.rollback()
        writer.close()
    db.dispose()


def test_a_reading_session_refuses_to_write(db: Database) -> None:
    """Its transaction takes no write lock (SQLite), so a write in it would not wait its turn:
    it is refused, on SQLite by the node, on PostgreSQL by a read-only transaction."""
    receive(db, "1.2.3.61", 1)
    with pytest.raises(Exception, match=r"read-only|may not write"), db.reading() as session:
        session.execute(update(Series).values(pending=False))
    with db.reading() as session:  # the connection goes back to the pool fit to write again
        assert session.scalar(select(func.count()).select_from(Series)) == 1
    receive(db, "1.2.3.62", 1)


def test_a_listing_read_in_batches_gives_each_job_its_own_inputs_deliveries_and_history(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jobs list` reads a thousand jobs per query (before: three queries per job); each record
    must still carry only its own job's rows, across the batches' edges too."""
    monkeypatch.setattr(jobs_module, "_JOBS_PER_READ", 2)
    made = {}
    for count in (1, 2, 3, 4, 5):
        receive(db, f"1.2.3.20.{count}", count)
        [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
        made[job_id] = count
    for attempt, job_id in enumerate(list(made)[:3], start=1):
        claimed = claim_next_job(db, "w", 60, part=JobPart.ORIGINALS)
        assert claimed is not None and claimed.id == job_id
        record_delivery(db, job_id, "w", "pacs", DeliveryStatus.FAILED, attempt, f"down {job_id}")
        assert finish_attempt(db, job_id, "w", FAST_RETRY) is not None

    listed = list_jobs(db, limit=10)

    assert [job.id for job in listed] == sorted(made, reverse=True)
    for job in listed:
        assert job.instances == made[job.id]
        assert job == get_job(db, job.id)  # the one-job read: same record
        tried = job.attempts == 1
        assert [d.error for d in job.deliveries] == ([f"down {job.id}"] if tried else [None])
        assert [event.job_id for event in job.history] == ([job.id] if tried else [])
