"""A C-STORE whose store hangs (here: SQLite's write lock held by another process; in the
field: a frozen PostgreSQL server or a hung mount) is answered 0xA700 at
`node.store_timeout_seconds`, and the store finishes behind once it can. What else an
association waits for in the database (a release, a Storage Commitment request) is bounded by
the same setting."""

import sqlite3
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import text

from dicomnode.db import open_database
from tests.support.commitment import Modality
from tests.support.dcmtk import storescu
from tests.support.scu import c_store


def test_a_store_that_hangs_is_answered_at_its_deadline_and_finishes_behind(
    node_factory, ct_series: list[Path]
) -> None:
    node = node_factory([], node={"store_timeout_seconds": 2}).start()
    assert c_store(node.port, ct_series[0]) is not None  # the database file is there
    holder = sqlite3.connect(node.data_dir / "dicomnode.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # held past the 30 s busy timeout the store would wait
    try:
        status = c_store(node.port, ct_series[1])
    finally:
        holder.rollback()
        holder.close()
    assert status is not None and status.Status == 0xA700
    assert "did not finish storing it within 2 s" in status.ErrorComment
    sop = dcmread(ct_series[1], stop_before_pixels=True).SOPInstanceUID
    refused = [line for line in node.log().splitlines() if "C-STORE failed" in line]
    assert len(refused) == 1 and f"sop={sop}" in refused[0]
    assert "(node.store_timeout_seconds)" in refused[0]
    deadline = time.monotonic() + 40
    while f"a store past its deadline finished: the instance is stored sop={sop}" not in (
        node.log()
    ):
        assert time.monotonic() < deadline, node.log()[-3000:]
        time.sleep(0.2)
    assert c_store(node.port, ct_series[2]).Status == 0x0000  # the lock is gone: stores go on


def test_a_release_the_database_cannot_record_in_time_is_left_to_the_quiet_rule(
    node_factory, ct_series: list[Path]
) -> None:
    """The association's thread recorded the release however long the database took (held
    here by SQLite's write lock past its 30 s busy timeout): a frozen database kept every such
    thread, and the listener's slots with them."""
    node = node_factory([], node={"store_timeout_seconds": 2}).start()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    assert assoc.send_c_store(dcmread(ct_series[0])).Status == 0x0000
    holder = sqlite3.connect(node.data_dir / "dicomnode.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assoc.release()
        said = node.wait_for_log("the release of series=", timeout=20)
    finally:
        holder.rollback()
        holder.close()
    series = dcmread(ct_series[0], stop_before_pixels=True).SeriesInstanceUID
    assert said.endswith(
        f"the release of series={series} is not recorded yet (they complete after "
        "completion.series_quiet_seconds at the latest): the database did not answer within "
        "2 s (node.store_timeout_seconds)"
    )
    [job] = node.wait_for_jobs(lambda jobs: len(jobs) == 1)  # by the quiet rule (3 s here)
    assert job["instances"] == 1


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
def test_a_commitment_request_the_database_cannot_answer_in_time_gets_a_processing_failure(
    node_factory, database_url: str, ct_series: list[Path]
) -> None:
    """Reading what the caller asks about waited for the database's lock_timeout (30 s), as
    long as the caller's own DIMSE timeout: the caller gave up on an answer that never said
    why. Here a table lock holds the read, as a frozen server would."""
    modality = Modality().start()
    try:
        node = node_factory([], peers=[modality.peer()], node={"store_timeout_seconds": 2})
        node.start()
        assert storescu(node.port, ct_series[:2], calling_aet=modality.ae_title).returncode == 0
        db = open_database(database_url)
        try:
            with db.engine.connect() as holder:
                holder.execute(text("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE"))
                status, transaction = modality.ask(node.port, ct_series[:2])
                holder.rollback()
        finally:
            db.dispose()
        assert status == 0x0110
        said = node.wait_for_log("storage commitment request not answered")
        assert said.endswith(
            f"transaction={transaction} calling_aet={modality.ae_title}: the database or the "
            "spool did not answer within 2 s (node.store_timeout_seconds)"
        )
        assert modality.ask(node.port, ct_series[:2])[0] == 0x0000  # asked again: answered
    finally:
        modality.stop()
