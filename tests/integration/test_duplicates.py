"""Copies of one SOP Instance UID arriving at once, into different series (a sender that moved
an image and sends both studies together): every copy answered Success, and the one the
database names is on disk. Real files and a real SQLite database; the associations are stood
in for (the receiver reads only the caller's AE title of them).
"""

import threading
from pathlib import Path
from types import SimpleNamespace

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.config import Settings
from dicomnode.db.engine import open_database
from dicomnode.db.instances import stored_path
from dicomnode.receive.scp import StorageReceiver
from dicomnode.receive.status import SUCCESS
from dicomnode.receive.store_lane import Arrival
from dicomnode.spool import Spool
from tests.support.series import write_ct_series


class _Caller:
    """What the receiver reads of an association: the caller's AE title."""

    requestor = SimpleNamespace(ae_title="MODALITY")


def _arrival(source: Path, series_uid: str) -> Arrival:
    ds = dcmread(source)
    ds.SeriesInstanceUID = series_uid
    data = DicomBytesIO()
    data.is_little_endian, data.is_implicit_VR = True, False  # as write_ct_series writes it
    write_dataset(data, ds)
    caller = _Caller()
    return Arrival(
        caller,  # type: ignore[arg-type]
        ds.SOPClassUID,
        ds.SOPInstanceUID,
        ExplicitVRLittleEndian,
        data.getvalue(),
    )


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
