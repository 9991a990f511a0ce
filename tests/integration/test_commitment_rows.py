"""Storage Commitment bookkeeping on a real SQLite file and PostgreSQL (db/commitments.py): what
a peer's report, late or repeated, does to the rows of the requests that asked."""

from pydicom.uid import generate_uid

from dicomnode.db import Database
from dicomnode.db.commitments import record_report, record_request, transaction_state
from dicomnode.db.instances import create_jobs_for_quiet_series
from dicomnode.dicom.commitment import CommitmentReport, Failure, Reference
from dicomnode.status import JobPart
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive

pytestmark = ON_BOTH_DATABASES

CT = "1.2.840.10008.5.1.4.1.1.2"
JOB = 1


def _asked_twice(db: Database) -> tuple[list[Reference], str, str]:
    """Job JOB's instances asked for under T1, then again under T2 (T1's report never came in
    time): the references, T1 and T2."""
    refs = [Reference(CT, uid) for uid in receive(db, "1.2.3.60", 3)]
    [job_id] = create_jobs_for_quiet_series(db, 0, ["pacs"], parts=[JobPart.ORIGINALS])
    assert job_id == JOB  # a fresh database
    first, second = generate_uid(), generate_uid()
    record_request(db, job_id, "pacs", first, refs)
    record_request(db, job_id, "pacs", second, refs)
    return refs, first, second


def test_a_report_on_the_request_before_the_retry_still_commits(db: Database) -> None:
    """A peer slower than commitment_timeout_seconds: its report on T1 came while the retry
    waited for T2's and was thrown away ("unknown transaction"), and every retry sent the
    series again until the job was dead."""
    refs, first, second = _asked_twice(db)
    assert record_report(db, CommitmentReport(first, tuple(refs), ())) == 3
    state = transaction_state(db, second)
    assert (state.committed, state.pending, state.failed) == (3, 0, ())


def test_a_failure_on_the_request_before_leaves_the_retry_waiting(db: Database) -> None:
    refs, first, second = _asked_twice(db)
    stale = CommitmentReport(first, (), (Failure(refs[0], 0x0110),))
    assert record_report(db, stale) == 1  # known (not "unknown transaction"), decides nothing
    assert transaction_state(db, second).pending == 3


def test_what_was_committed_stays_committed_whatever_a_later_report_says(db: Database) -> None:
    refs, _first, second = _asked_twice(db)
    assert record_report(db, CommitmentReport(second, tuple(refs), ())) == 3
    again = CommitmentReport(second, (), tuple(Failure(ref, 0x0110) for ref in refs))
    assert record_report(db, again) == 3  # its transaction is known: not "unknown"
    state = transaction_state(db, second)
    assert (state.committed, state.failed) == (3, ())


def test_an_instance_committed_meanwhile_is_not_asked_for_again(db: Database) -> None:
    """A late report can commit an instance between the retry's look at what is committed and
    its request: the request leaves that row as it is."""
    refs, first, _second = _asked_twice(db)
    assert record_report(db, CommitmentReport(first, (refs[0],), ())) == 1
    third = generate_uid()
    record_request(db, JOB, "pacs", third, refs)
    state = transaction_state(db, third)
    assert (state.committed, state.pending) == (0, 2)  # refs[0] stays committed, under T2
