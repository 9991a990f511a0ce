"""What a destination stored of a delivery that is not done (db/delivered.py), on a real SQLite
file and PostgreSQL: kept for the retry, added to once, gone when it is done or purged."""

from sqlalchemy import func, select, update

from dicomnode.db import Database, DeliveryStatus
from dicomnode.db.admin import resend_job, retry_job
from dicomnode.db.delivered import delivered_uids, forget_stored
from dicomnode.db.instances import create_jobs_for_quiet_series
from dicomnode.db.jobs import claim_next_job, record_delivery
from dicomnode.db.models import DeliveredInstance, Delivery, Job
from dicomnode.db.retention import forget_series, lock_series
from dicomnode.status import JobPart, JobStatus
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive

pytestmark = ON_BOTH_DATABASES

FAILED, DONE = DeliveryStatus.FAILED, DeliveryStatus.DONE
PEER = "PACS@10.0.0.1:104"


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
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "answered 0xA700", [a, b], PEER)
    assert delivered_uids(db, job, "pacs", PEER) == {a, b}
    assert delivered_uids(db, job, "other", PEER) == set()  # per destination

    # Written again (its acknowledgement lost in an outage), and the next attempt's: no
    # duplicate row, nothing lost.
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "answered 0xA700", [a, b], PEER)
    assert record_delivery(db, job, "w", "pacs", FAILED, 3, "answered 0xA700", [c], PEER)
    assert delivered_uids(db, job, "pacs", PEER) == {a, b, c}
    assert record_delivery(db, job, "w", "other", FAILED, 1, "answered 0xA700", [a], PEER)

    assert record_delivery(db, job, "w", "pacs", DONE, 3, None, [], PEER)
    assert delivered_uids(db, job, "pacs", PEER) == set()
    assert delivered_uids(db, job, "other", PEER) == {a}


def test_an_attempt_that_lost_the_job_records_nothing_of_it(db: Database) -> None:
    job, (a, _b, _c) = _claimed(db, ["pacs"])
    assert not record_delivery(db, job, "someone-else", "pacs", FAILED, 1, "x", [a], PEER)
    assert delivered_uids(db, job, "pacs", PEER) == set()


def test_forgetting_a_series_forgets_its_rows(db: Database) -> None:
    """What a purge and `jobs discard` both do; the job's deletion takes its rows (ON DELETE
    CASCADE), so a version from before the table, which knows nothing of them, can too."""
    job, (a, b, _c) = _claimed(db, ["pacs"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "x", [a, b], PEER)
    assert _rows(db) == 2
    with db.session() as session:
        series = lock_series(session, "1.2.3.70")
        assert series is not None
        forgotten = forget_series(session, series.series_uid, series.study_uid, lambda _: None)
    assert forgotten.job_ids == [job]
    assert _rows(db) == 0


def test_a_resend_sends_whole_whatever_rows_a_done_delivery_left(db: Database) -> None:
    """A version from before the table finished the delivery without forgetting its rows (a
    downgrade, then an upgrade): the resend an admin asks for, because the PACS lost the
    series, must not take them for what the PACS still has."""
    job, (a, b, _c) = _claimed(db, ["pacs"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "x", [a, b], PEER)
    with db.session() as session:  # done as the older version would leave it
        session.execute(update(Delivery).values(status=DONE))
        session.execute(update(Job).values(status=JobStatus.DONE, lease_owner=None))
    resend_job(db, job, ["pacs"])
    assert delivered_uids(db, job, "pacs", PEER) == set()


def test_what_another_peer_of_that_name_stored_goes_with_the_next_outcome(db: Database) -> None:
    """The destination was pointed at a standby: what the first PACS stored holds nothing
    back, and is gone once the standby's first outcome is recorded."""
    job, (a, b, c) = _claimed(db, ["pacs"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "x", [a, b], PEER)
    standby = "STANDBY@10.0.0.2:104"
    assert delivered_uids(db, job, "pacs", standby) == set()
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "x", [a, c], standby)
    assert delivered_uids(db, job, "pacs", standby) == {a, c}
    assert delivered_uids(db, job, "pacs", PEER) == set()


def test_an_admin_retry_sends_whole(db: Database) -> None:
    """The PACS may have lost or deleted the part it had (an admin cleaned up the study)."""
    job, (a, b, _c) = _claimed(db, ["pacs"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 2, "x", [a, b], PEER)
    with db.session() as session:
        session.execute(update(Job).values(status=JobStatus.DEAD, lease_owner=None))
    retry_job(db, job, ["pacs"])
    assert delivered_uids(db, job, "pacs", PEER) == set()


def test_a_derived_series_made_anew_forgets_what_every_destination_stored(db: Database) -> None:
    """Enhanced again (QA held part of it, or its outbox files were gone): the same SOP
    Instance UIDs may now carry other pixels, so nothing is withheld on their account."""
    job, (a, b, _c) = _claimed(db, ["pacs", "other"])
    assert record_delivery(db, job, "w", "pacs", FAILED, 1, "x", [a], PEER)
    assert record_delivery(db, job, "w", "other", FAILED, 1, "x", [b], PEER)
    forget_stored(db, job)
    assert _rows(db) == 0
