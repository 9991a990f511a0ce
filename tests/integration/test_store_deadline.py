"""A C-STORE whose store hangs (here: SQLite's write lock held by another process; in the
field: a frozen PostgreSQL server or a hung mount) is answered 0xA700 at
`node.store_timeout_seconds`, and the store finishes behind once it can."""

import sqlite3
import time
from pathlib import Path

from pydicom import dcmread

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
