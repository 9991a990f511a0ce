"""The forward's send lane (forward/send_lane.py): what arrives is the spooled data set byte for
byte (pynetdicom's SCP) and DCMTK `storescp` takes it, pynetdicom's C-STORE never runs, and a
send that breaks off ends in the error the forwarder already knows, with the association aborted
when half a message went out. A peer that stops reading and a large file: test_forwarding_tuning.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, FileMetaDataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import CTImageStorage
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from dicomnode.config import Destination, Settings
from dicomnode.db.records import SpooledInstance
from dicomnode.dicom.release import end
from dicomnode.errors import UnreadableSpool
from dicomnode.forward import send_lane
from dicomnode.forward.associate import open_association
from dicomnode.forward.scu import send_series
from tests.support.dcmtk import StoreScp
from tests.support.faulty_scp import FaultyScp
from tests.support.series import write_ct_series


def spooled(path: Path) -> SpooledInstance:
    ds = dcmread(path, stop_before_pixels=True)
    return SpooledInstance(
        str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), path
    )


def data_set_bytes(path: Path) -> bytes:
    """What follows a file's File Meta Information: what went over the wire."""
    with open(path, "rb") as file:
        read_preamble(file, False)
        read_dataset(file, False, True, stop_when=lambda tag, _vr, _length: tag.group != 2)
        return file.read()


def received(pacs_dir: Path) -> dict[str, Dataset]:
    """SOP Instance UID -> each data set storescp wrote (it encodes sequences its own way, so
    these compare as values; FaultyScp keeps the bytes as they came)."""
    files = [path for path in pacs_dir.iterdir() if path.is_file()]
    return {str(ds.SOPInstanceUID): without_meta(ds) for ds in map(dcmread, files)}


def without_meta(ds: Dataset) -> Dataset:
    """The data set's values as storescp keeps them: it drops Data Set Trailing Padding."""
    ds.file_meta = FileMetaDataset()
    if (0xFFFC, 0xFFFC) in ds:
        del ds[0xFFFC, 0xFFFC]
    return ds


@pytest.fixture
def no_pynetdicom_store(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("pynetdicom's send_c_store ran: the lane was not used")

    monkeypatch.setattr(Association, "send_c_store", refuse)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[tuple[StoreScp, Destination]]:
    with StoreScp(tmp_path / "pacs") as scp:
        yield scp, Destination("pacs", "STORESCP", "127.0.0.1", scp.port)


def series(tmp_path: Path) -> list[Path]:
    paths = write_ct_series(tmp_path / "ct", 2, size=512)  # 34 PDUs each at 16 KiB
    paths += write_ct_series(tmp_path / "small", 1, size=16)  # one PDU
    paths.append(Path(str(get_testdata_file("MR_small_RLE.dcm"))))  # compressed, sent as is
    return paths


def test_a_series_goes_by_the_lane_and_arrives_byte_for_byte(
    tmp_path: Path, no_pynetdicom_store: None
) -> None:
    paths = series(tmp_path)
    scp = FaultyScp(keep_data_sets=True).start()  # pynetdicom's SCP, the bytes as received
    try:
        destination = Destination("pacs", scp.ae_title, "127.0.0.1", scp.port)
        report = send_series(1, destination, [spooled(path) for path in paths], Settings())
    finally:
        scp.stop()

    assert report.sent == len(paths)
    assert scp.data_sets == {
        str(dcmread(path).SOPInstanceUID): data_set_bytes(path) for path in paths
    }
    assert scp.message_ids == [1, 2, 3, 4] and scp.priorities == [2, 2, 2, 2]


def test_dcmtk_takes_the_lanes_requests(
    tmp_path: Path, pacs: tuple[StoreScp, Destination], no_pynetdicom_store: None
) -> None:
    scp, destination = pacs
    paths = series(tmp_path)
    report = send_series(1, destination, [spooled(path) for path in paths], Settings())

    assert report.sent == len(paths)
    assert received(scp.out_dir) == {
        str(ds.SOPInstanceUID): without_meta(ds) for ds in map(dcmread, paths)
    }


def test_a_file_that_is_not_the_instance_its_row_names_is_not_sent_and_the_rest_go(
    tmp_path: Path, pacs: tuple[StoreScp, Destination], no_pynetdicom_store: None
) -> None:
    scp, destination = pacs
    first, second = (spooled(path) for path in write_ct_series(tmp_path / "ct", 2, size=16))
    wrong = SpooledInstance(
        "1.2.3.999", second.sop_class_uid, second.transfer_syntax_uid, second.path
    )

    with pytest.raises(UnreadableSpool) as caught:
        send_series(1, destination, [wrong, first], Settings())

    assert "sop=1.2.3.999" in str(caught.value)
    assert "MediaStorageSOPInstanceUID" in str(caught.value)
    assert caught.value.sent == 1
    assert set(received(scp.out_dir)) == {first.sop_instance_uid}


class _FailsAfter:
    """A file whose reads fail once `good` bytes were read: a disk error mid-send."""

    def __init__(self, path: Path, good: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed with this object
        self._good = good

    def read(self, size: int = -1) -> bytes:
        if self._file.tell() >= self._good:
            raise OSError(5, "Input/output error")
        return self._file.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> "_FailsAfter":
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()


def test_a_file_that_fails_mid_send_aborts_the_association_and_names_the_file(
    tmp_path: Path,
    pacs: tuple[StoreScp, Destination],
    monkeypatch: pytest.MonkeyPatch,
    no_pynetdicom_store: None,
) -> None:
    scp, destination = pacs
    broken, after = (spooled(path) for path in write_ct_series(tmp_path / "ct", 2, size=512))
    monkeypatch.setattr(send_lane, "BATCH_BYTES", 64 * 1024)  # the first batch goes out whole
    real_open = open

    def opened(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if Path(path) == broken.path:
            return _FailsAfter(broken.path, 200 * 1024)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(send_lane, "open", opened, raising=False)

    with pytest.raises(UnreadableSpool) as caught:
        send_series(1, destination, [broken, after], Settings())

    assert str(broken.path) in str(caught.value) and "Input/output error" in str(caught.value)
    assert caught.value.sent == 0  # the association went with the half-sent message
    assert received(scp.out_dir) == {}


def test_an_association_aborted_as_a_send_gives_up_is_not_then_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With dimse_timeout = network_timeout (the defaults: 60 s each) a PACS that never answers
    has pynetdicom's reactor abort on its network timeout just as the sender gives up and
    aborts too; the sender's abort then returns at once, and `is_established` reads True until
    the reactor's kill(). The sender's release in that moment put an A-RELEASE into a state
    machine in Sta13, which raised in the DUL thread ("Invalid event 'Evt11' for the current
    state 'Sta13'", test_bad_input in CI) and waited acse_timeout for an answer. The moment is
    made here by marking the abort sent (as `_abort_blocking` does first) on an association
    that is still up: it must not be released."""
    released: list[bool] = []
    negotiate = ACSE.negotiate_release

    def spied(acse: ACSE) -> None:
        released.append(True)
        negotiate(acse)

    monkeypatch.setattr(ACSE, "negotiate_release", spied)
    scp = FaultyScp().start()
    try:
        destination = Destination("faulty", scp.ae_title, "127.0.0.1", scp.port)
        contexts = [build_context(CTImageStorage)]
        assoc = open_association(destination, Settings(), contexts, "faulty", None)
        assoc._sent_abort = True  # the reactor's abort, before its kill()
        assert assoc.is_established
        end(assoc)
        assert released == []
        assoc._sent_abort = False
        end(assoc)  # an association no abort was sent on is released
        assert released == [True] and assoc.is_released
    finally:
        scp.stop()
