"""What a destination stored of a delivery that is not done (db/delivered.py), on a real SQLite
file and PostgreSQL: kept for the retry, added to once, gone when it is done or purged."""

from sqlalchemy import func, select

from dicomnode.db import Database, DeliveryStatus
from dicomnode.db.delivered import delivered_uids
from dicomnode.db.instances import create_jobs_for_quiet_series
from dicomnode.db.jobs import claim_next_job, record_delivery
from dicomnode.db.models import DeliveredInstance
from dicomnode.db.retention import forget_series, lock_series
from dicomnode.status import JobPart
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive

pytestmark = ON_BOTH_DATABASES

FAILED, DONE = DeliveryStatus.FAILED, DeliveryStatus.DONE


def _claimed(db: Database, destinations: list[str]) -> tuple[int, list[str]]:
    """A claimed originals job of a three-instance series, and its SOP Instance UIDs."""
    uids = receive(db, "1.2.3.70", 3)
    [job_id] = create_jobs_for_quiet_series(db, 0, destinations, parts=[JobPart.ORIGINALS])
    assert claim_next_job(db, "w", 60, JobPart.ORIGINALS) is not None
    return job_id, uids


def _rows(db: Database) -> int:
    with db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(DeliveredInstance)) or 0)


def test_a_failed_delivery_keeps_what_it_stored_until_it_is_done(db: Database) -> None:
    job, (a, b, c) = _claimed(db, ["pacs", "other"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "answered 0xA700", [a, b])
    assert delivered_uids(db, job, "pacs") == {a, b}
    assert delivered_uids(db, job, "other") == set()  # per destination

    # Written again (its acknowledgement lost in an outage), and the next attempt's: no
    # duplicate row, nothing lost.
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "answered 0xA700", [a, b])
    assert record_delivery(db, job, "w", "pacs", FAILED, 3, "answered 0xA700", [c])
    assert delivered_uids(db, job, "pacs") == {a, b, c}
    assert record_delivery(db, job, "w", "other", FAILED, 1, "answered 0xA700", [a])

    assert record_delivery(db, job, "w", "pacs", DONE, 3, None, [])
    assert delivered_uids(db, job, "pacs") == set()
    assert delivered_uids(db, job, "other") == {a}


def test_an_attempt_that_lost_the_job_records_nothing_of_it(db: Database) -> None:
    job, (a, _b, _c) = _claimed(db, ["pacs"])
    assert not record_delivery(db, job, "someone-else", "pacs", FAILED, 1, "x", [a])
    assert delivered_uids(db, job, "pacs") == set()


def test_forgetting_a_series_forgets_its_rows(db: Database) -> None:
    """What a purge and `jobs discard` both do (foreign keys hold on both databases)."""
    job, (a, b, _c) = _claimed(db, ["pacs"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "x", [a, b])
    assert _rows(db) == 2
    with db.session() as session:
        series = lock_series(session, "1.2.3.70")
        assert series is not None
        forgotten = forget_series(session, series.series_uid, series.study_uid, lambda _: None)
    assert forgotten.job_ids == [job]
    assert _rows(db) == 0
