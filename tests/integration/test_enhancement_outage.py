"""A derived job through a short database outage: its enhancement's details wait for the
database, and a failure it cannot wait out is the database's, not the enhancement's."""

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

import dicomnode.db.engine as engine_module
import dicomnode.pipeline.runner as runner_module
from dicomnode.config import Settings
from dicomnode.db import open_database
from dicomnode.db.instances import create_jobs_for_quiet_series
from dicomnode.db.jobs import claim_next_job, get_job
from dicomnode.pipeline.delivery import DeliveryQueues
from dicomnode.pipeline.runner import JobRunner
from dicomnode.spool import Spool
from dicomnode.status import JobPart
from tests.integration.test_job_table import BOTH_PARTS, receive


def test_a_derived_job_rides_out_a_database_outage_without_enhancing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL restarting as a derived job wrote its enhancement's details made the job an
    "internal error" (a traceback, a failed enhancement counted) and enhanced the series
    again at its next attempt. The write now waits for the database as the attempt's end does
    (here: SQLite locked past its busy timeout by another process); a database failure the
    job cannot wait out is said as one, not counted as the enhancement's."""
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_SECONDS", 1)
    database = tmp_path / "n.db"
    db = open_database(f"sqlite:///{database}")
    receive(db, "1.2.3.41", 2)
    create_jobs_for_quiet_series(db, 0, ["pacs"], parts=BOTH_PARTS)
    job = claim_next_job(db, "worker", 60, part=JobPart.DERIVED)
    assert job is not None
    settings = Settings()
    runner = JobRunner(
        settings, db, Spool(tmp_path / "spool"), "worker", DeliveryQueues(settings, db),
        JobPart.DERIVED,
    )  # fmt: skip
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    outage = threading.Timer(3, other.rollback)
    outage.start()
    try:
        runner._record_details(job, {"status": "enhanced"})
    finally:
        outage.join()
        other.close()
    recorded = get_job(db, job.id)
    assert recorded is not None and recorded.details == {"status": "enhanced"}

    failed_before = runner_module.ENHANCEMENTS_FAILED._value.get()
    away = OperationalError("UPDATE jobs", {}, sqlite3.OperationalError("database is locked"))
    away.orig.sqlite_errorcode = 5  # type: ignore[union-attr]  # SQLITE_BUSY
    runner._failed_enhancement(job, [], away)
    recorded = get_job(db, job.id)
    assert recorded is not None and recorded.status == "failed"
    assert recorded.error is not None and recorded.error.startswith("the database failed: ")
    assert runner_module.ENHANCEMENTS_FAILED._value.get() == failed_before
    # Any other failure of the database's is a bug to see: its traceback, counted.
    broken = IntegrityError("UPDATE jobs", {}, sqlite3.IntegrityError("NOT NULL failed"))
    with caplog.at_level(logging.ERROR, logger="dicomnode.pipeline.runner"):
        runner._failed_enhancement(job, [], broken)  # the job is no longer this attempt's
    [logged] = [r for r in caplog.records if "enhancement failed with an internal" in r.message]
    assert logged.exc_info is not None
    assert runner_module.ENHANCEMENTS_FAILED._value.get() == failed_before + 1
