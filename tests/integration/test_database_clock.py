"""Whose clock judges leases, retry times and a series' quiet spell.

On PostgreSQL several hosts share the job tables and their clocks drift apart: the server's
clock stamps and judges those times, so a host whose clock runs ahead neither takes a live
lease away from its worker nor completes a series that is still arriving. SQLite has one host,
whose clock is the database's (the contrast these tests also show).
"""

import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from dicomnode.config import RetrySettings
from dicomnode.db import Database
from dicomnode.db.clock import db_now
from dicomnode.db.instances import create_jobs_for_quiet_series
from dicomnode.db.jobs import (
    claim_next_job,
    finish_attempt,
    pull_back_future_times,
    reclaim_expired_leases,
    record_delivery,
    renew_lease,
)
from dicomnode.db.models import utcnow
from dicomnode.pipeline.lease import LeaseKeeper, renew_every_lease_now
from dicomnode.status import DeliveryStatus, JobPart, JobStatus
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import ORIGINALS_ONLY, receive

pytestmark = ON_BOTH_DATABASES

AHEAD = timedelta(minutes=10)


@pytest.fixture
def host_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[timedelta], None]]:
    """Calling it with an offset sets this host's clock (every module's `utcnow`) that far
    from the true time."""

    def skew(offset: timedelta) -> None:
        for module in list(sys.modules.values()):
            if module.__name__.startswith("dicomnode") and getattr(module, "utcnow", None):
                monkeypatch.setattr(module, "utcnow", lambda: utcnow() + offset)

    yield skew


@pytest.fixture
def host_clock_ahead(host_clock: Callable[[timedelta], None]) -> Callable[[], None]:
    """Calling it sets this host's clock AHEAD of the true time."""
    return lambda: host_clock(AHEAD)


def test_a_host_whose_clock_runs_ahead_leaves_a_live_lease_alone(
    db: Database, database_backend: str, host_clock_ahead: Callable[[], None]
) -> None:
    receive(db, "1.2.3.4", 2)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    assert claim_next_job(db, "worker-a", lease_seconds=300, part=JobPart.ORIGINALS) is not None
    host_clock_ahead()  # another host's reaper, 10 minutes ahead
    reaped = reclaim_expired_leases(db, max_attempts=3)
    if database_backend == "postgresql":
        assert reaped == []
        assert renew_lease(db, job_id, "worker-a", lease_seconds=300)
    else:  # one host: its clock is the database's
        assert reaped == [job_id]


def test_a_host_whose_clock_runs_ahead_does_not_complete_a_series_still_arriving(
    db: Database, database_backend: str, host_clock_ahead: Callable[[], None]
) -> None:
    receive(db, "1.2.3.5", 2)
    host_clock_ahead()  # the completion tick of a host 10 minutes ahead, quiet time 60 s
    created = create_jobs_for_quiet_series(db, 60, ["pacs"], parts=ORIGINALS_ONLY)
    assert (created == []) == (database_backend == "postgresql")


def test_a_retry_is_due_by_the_database_clock(
    db: Database, database_backend: str, host_clock_ahead: Callable[[], None]
) -> None:
    """A failed job's retry time is stamped and judged by one clock: a worker on a host whose
    clock runs ahead does not take it early."""
    receive(db, "1.2.3.6", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    assert claim_next_job(db, "worker-a", lease_seconds=60, part=JobPart.ORIGINALS) is not None
    assert record_delivery(db, job_id, "worker-a", "pacs", DeliveryStatus.FAILED, 0, "down")
    policy = RetrySettings(initial_delay_seconds=300, max_delay_seconds=300, jitter=0)
    failed = finish_attempt(db, job_id, "worker-a", policy)
    assert failed is not None and failed.status == JobStatus.FAILED
    with db.session() as session:
        stamped_at = db_now(session)
    host_clock_ahead()
    early = claim_next_job(db, "worker-b", lease_seconds=60, part=JobPart.ORIGINALS)
    assert (early is None) == (database_backend == "postgresql")
    assert isinstance(stamped_at, datetime) and stamped_at.tzinfo is None  # naive UTC
    assert abs(stamped_at - utcnow()) < timedelta(seconds=5)  # the server's clock is true here


def test_after_a_step_forward_the_leases_this_process_keeps_are_renewed_before_a_reap(
    db: Database, database_backend: str, host_clock_ahead: Callable[[], None]
) -> None:
    """The clock-step watch renews them first: on SQLite (this host's clock) the reaper would
    otherwise take the job from its live worker, and run it again. A lease no keeper renews
    (its worker died) is reaped as before."""
    receive(db, "1.2.3.7", 1)
    receive(db, "1.2.3.8", 1)
    kept, dead = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    for owner in ("worker-a", "worker-b"):
        assert claim_next_job(db, owner, lease_seconds=300, part=JobPart.ORIGINALS) is not None
    with LeaseKeeper(db, kept, "worker-a", lease_seconds=300):
        host_clock_ahead()  # the clock steps 10 minutes forward
        renew_every_lease_now()
        reaped = reclaim_expired_leases(db, max_attempts=3)
    assert reaped == ([] if database_backend == "postgresql" else [dead])


def test_after_a_step_back_what_was_stamped_before_it_is_not_waited_out(
    db: Database, database_backend: str, host_clock: Callable[[timedelta], None]
) -> None:
    """A job queued and a series received before the clock stepped an hour back lay an hour
    ahead of the new time on SQLite: nothing claimed or completed for that hour."""
    receive(db, "1.2.3.9", 1)
    [queued] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=ORIGINALS_ONLY)
    receive(db, "1.2.3.10", 1)  # still arriving when the clock steps
    host_clock(-timedelta(hours=1))
    stalled = claim_next_job(db, "worker-a", lease_seconds=60, part=JobPart.ORIGINALS) is None
    assert stalled == (database_backend == "sqlite")  # PostgreSQL's server did not step
    if stalled:
        assert create_jobs_for_quiet_series(db, 1, ["pacs"], parts=ORIGINALS_ONLY) == []
        assert pull_back_future_times(db, lease_seconds=60) == 2
        claimed = claim_next_job(db, "worker-a", lease_seconds=60, part=JobPart.ORIGINALS)
        assert claimed is not None and claimed.id == queued
    time.sleep(1.1)
    assert len(create_jobs_for_quiet_series(db, 1, ["pacs"], parts=ORIGINALS_ONLY)) == 1
    assert pull_back_future_times(db, lease_seconds=60) == 0  # idempotent
