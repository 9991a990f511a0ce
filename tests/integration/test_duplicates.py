"""Copies of one SOP Instance UID arriving at once, into different series (a sender that moved
an image and sends both studies together): every copy answered Success, and the one the
database names is on disk. Real files and a real SQLite database; the associations are stood
in for (the receiver reads only the caller's AE title of them).
"""

import dataclasses
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.config import Settings
from dicomnode.db import engine
from dicomnode.db.engine import open_database
from dicomnode.db.instances import stored_path
from dicomnode.receive.scp import StorageReceiver
from dicomnode.receive.status import SUCCESS
from dicomnode.receive.store_lane import Arrival
from dicomnode.spool import Spool
from tests.support.scu import arrival_of
from tests.support.series import write_ct_series


class _Caller:
    """What the receiver reads of an association: the caller's AE title."""

    requestor = SimpleNamespace(ae_title="MODALITY")


def _arrival(source: Path, series_uid: str) -> Arrival:
    ds = dcmread(source)
    ds.SeriesInstanceUID = series_uid
    return arrival_of(ds, _Caller())


def test_copies_sent_at_once_into_two_series_never_lose_the_copy_on_record(
    tmp_path: Path,
) -> None:
    [source] = write_ct_series(tmp_path / "series", 1, size=64)
    assert dcmread(source).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    receiver = StorageReceiver(
        Settings(), Spool(tmp_path / "spool"), open_database(f"sqlite:///{tmp_path / 'n.db'}")
    )
    uid = dcmread(source).SOPInstanceUID
    here, there = _arrival(source, generate_uid()), _arrival(source, generate_uid())
    assert receiver.store(here) == SUCCESS

    for _round in range(30):  # the existing copy is in `here`'s series: re-sent, and moved
        statuses: list[object] = []

        def send(arrival: Arrival, answers: list[object] = statuses) -> None:
            answers.append(receiver.store(arrival))

        senders = [threading.Thread(target=send, args=(a,)) for a in (here, there)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert statuses == [SUCCESS, SUCCESS]
        on_record = stored_path(receiver.db, uid)
        assert on_record is not None and on_record.is_file(), "an acknowledged copy was lost"


def _stored_while_locked(
    receiver: StorageReceiver, arrival: Arrival, database: Path
) -> Dataset | int:
    """What the receiver answers while another writer holds the SQLite database."""
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        return receiver.store(arrival)
    finally:
        lock.rollback()
        lock.close()


def test_a_copy_the_database_cannot_record_leaves_the_acknowledged_one_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-sent instance refused because its row cannot be committed (the database locked past
    its busy timeout) must not replace the copy acknowledged before it: the row still
    describes that one."""
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_SECONDS", 1)
    [source] = write_ct_series(tmp_path / "series", 1, size=64)
    database = tmp_path / "n.db"
    receiver = StorageReceiver(
        Settings(), Spool(tmp_path / "spool"), open_database(f"sqlite:///{database}")
    )
    series = generate_uid()
    first = _arrival(source, series)
    assert receiver.store(first) == SUCCESS
    path = stored_path(receiver.db, first.sop_instance_uid)
    assert path is not None
    acknowledged = path.read_bytes()
    changed = dcmread(source)
    changed.SeriesInstanceUID = series
    changed.ImageComments = "a second version"
    resent = DicomBytesIO()
    resent.is_little_endian, resent.is_implicit_VR = True, False
    write_dataset(resent, changed)
    second = dataclasses.replace(first, data_set=resent.getvalue())

    status = _stored_while_locked(receiver, second, database)

    assert isinstance(status, Dataset) and int(status.Status) == 0xA700
    assert path.read_bytes() == acknowledged, "the refused copy replaced the acknowledged one"
    assert list(receiver.spool.tmp_dir.iterdir()) == []
    assert receiver.store(second) == SUCCESS  # sent again: now it replaces it
    assert b"a second version" in path.read_bytes()
    assert list(receiver.spool.tmp_dir.iterdir()) == []


def test_a_new_copy_the_database_cannot_record_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """... and the refusal says what the database said in one log line (no traceback: it is the
    database's state, not a bug), and the sender's ErrorComment to send it again later."""
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_SECONDS", 1)
    [source] = write_ct_series(tmp_path / "series", 1, size=64)
    database = tmp_path / "n.db"
    receiver = StorageReceiver(
        Settings(), Spool(tmp_path / "spool"), open_database(f"sqlite:///{database}")
    )
    arrival = _arrival(source, generate_uid())
    status = _stored_while_locked(receiver, arrival, database)
    assert isinstance(status, Dataset) and int(status.Status) == 0xA700
    assert status.ErrorComment == "the database could not record it; send it again later"
    [record] = [r for r in caplog.records if r.getMessage().startswith("C-STORE failed")]
    said = "the database could not record it: database is locked"
    assert record.getMessage().endswith(said) and not record.exc_info
    assert receiver.spool.instance_files() == []  # nothing on disk that no row describes
    assert stored_path(receiver.db, arrival.sop_instance_uid) is None
