"""A job's history on a real SQLite file and PostgreSQL: kept across retries, added to an older
database, and the admin actions waiting in it for the node's log (taken `FOR UPDATE SKIP LOCKED`
on PostgreSQL, so each is logged by one node only)."""

from pathlib import Path

import pytest

import dicomnode.pipeline.retention as retention_module
from dicomnode.config import RetrySettings
from dicomnode.db import Database, open_database
from dicomnode.db.admin import retry_job
from dicomnode.db.history import take_unlogged_admin_events
from dicomnode.db.instances import create_jobs_for_quiet_series
from dicomnode.db.jobs import claim_next_job, finish_attempt, get_job
from dicomnode.pipeline.retention import purge_delivered
from dicomnode.spool import Spool
from dicomnode.status import JobPart
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive
from tests.integration.test_retention import SETTINGS, age, deliver_days_ago, store

ONE_ATTEMPT = RetrySettings(max_attempts=1, initial_delay_seconds=0, max_delay_seconds=0, jitter=0)

pytestmark = ON_BOTH_DATABASES


def test_an_older_database_gets_the_history_table_and_the_replay_columns(
    tmp_path: Path, database_url: str
) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'old.sqlite'}"
    db = open_database(url)
    receive(db, "1.2.3.40", 1)
    [job_id] = create_jobs_for_quiet_series(db, 0, [], parts=[JobPart.ORIGINALS])
    with db.engine.begin() as connection:  # the jobs table before this version
        connection.exec_driver_sql("DROP TABLE job_events")
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN replay")
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN outputs")
    db.dispose()

    upgraded = open_database(url)
    job = get_job(upgraded, job_id)
    assert job is not None and job.replay is None and job.history == ()
    claim_next_job(upgraded, "w", 60, part=JobPart.ORIGINALS)
    finish_attempt(upgraded, job_id, "w", ONE_ATTEMPT, error="model file not found")
    retry_job(upgraded, job_id, [], "alice")
    claim_next_job(upgraded, "w2", 60, part=JobPart.ORIGINALS)
    finish_attempt(upgraded, job_id, "w2", ONE_ATTEMPT, receive_only=True)  # no destinations

    job = get_job(upgraded, job_id)
    assert job is not None and job.status == "done" and job.error is None
    assert [(e.kind, e.attempt, e.status, e.user) for e in job.history] == [
        ("attempt", 1, "dead", None),
        ("retry", None, "queued", "alice"),
        ("attempt", 1, "done", None),
    ]
    assert job.history[0].detail is not None and "model file not found" in job.history[0].detail
    upgraded.dispose()


def test_a_purge_by_an_admin_waits_in_the_history_for_the_node_to_log_it(
    db: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    age(store(db, spool, "1.2.3", "1.2.3.4", "1.2.3.4.5"), days=3)
    job_id = deliver_days_ago(db, days=2)

    assert take_unlogged_admin_events(db) == []  # the node's own purges are not admin actions
    [purged] = purge_delivered(SETTINGS, db, spool, user="alice")
    [event] = take_unlogged_admin_events(db)
    assert (event.kind, event.user, event.job_id) == ("purge", "alice", None)
    assert event.detail == f"1 series purged (jobs {job_id}), delivered more than 1 days ago"
    assert take_unlogged_admin_events(db) == []  # logged once
    assert purged.job_ids == [job_id]


def test_a_purge_of_a_backlog_names_its_first_jobs_and_counts_the_rest(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge after months named every job id in one history row and one log line."""
    monkeypatch.setattr(retention_module, "JOBS_NAMED", 2)
    spool = Spool(tmp_path / "spool")
    jobs = []
    for index in range(4):
        age(store(db, spool, "1.2.3", f"1.2.3.{index}", f"1.2.3.{index}.1"), days=3)
        jobs.append(deliver_days_ago(db, days=2))
    assert len(purge_delivered(SETTINGS, db, spool, user="alice")) == 4
    [event] = take_unlogged_admin_events(db)
    assert event.detail.startswith(f"4 series purged (jobs {jobs[0]},{jobs[1]} and 2 more)")
