"""One destination's delivery of a job's series (pipeline/delivery.py), against a real peer."""

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import MRImageStorage

from dicomnode.config import Destination, Settings
from dicomnode.db import DeliveryStatus, ReceivedInstance, open_database
from dicomnode.db.instances import create_jobs_for_quiet_series, record_instance
from dicomnode.db.jobs import claim_next_job, get_job
from dicomnode.db.records import SpooledInstance
from dicomnode.pipeline.delivery import deliver
from dicomnode.status import JobPart
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.series import write_ct_series


def _spooled(paths: list[Path]) -> list[SpooledInstance]:
    return [
        SpooledInstance(ds.SOPInstanceUID, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, path)
        for path in paths
        for ds in [dcmread(path, stop_before_pixels=True)]
    ]


def _mr_copy(ct: Path, out: Path) -> Path:
    """A CT instance relabelled as MR: a second series, of a SOP class the peer refuses."""
    ds = dcmread(ct)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_series_refused_for_good_does_not_keep_the_next_one_from_the_destination(
    tmp_path: Path,
) -> None:
    ct = write_ct_series(tmp_path / "ct", 3, size=32)
    mr = _mr_copy(ct[0], tmp_path / "mr.dcm")
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    first = dcmread(ct[0], stop_before_pixels=True)
    record_instance(
        db,
        ReceivedInstance(
            first.SOPInstanceUID,
            first.SOPClassUID,
            ExplicitVRLittleEndian,
            first.StudyInstanceUID,
            first.SeriesInstanceUID,
            "CT",
            ct[0],
            ct[0].stat().st_size,
            "MODALITY",
        ),
    )
    create_jobs_for_quiet_series(db, 0, ["faulty"], [JobPart.ORIGINALS])
    job = claim_next_job(db, "test", 60, JobPart.ORIGINALS)
    assert job is not None
    peer = FaultyScp(behaviour=Behaviour(refuse_sop_class=MRImageStorage)).start()
    try:
        settings = Settings(
            destinations=[Destination("faulty", peer.ae_title, "127.0.0.1", peer.port)]
        )
        # the refused series first: it used to end the delivery before the others were sent
        deliver(settings, db, job, "faulty", [_spooled([mr]), _spooled(ct)])
    finally:
        peer.stop()

    assert set(peer.stored) == {dcmread(p).SOPInstanceUID for p in ct}
    [delivery] = get_job(db, job.id).deliveries
    assert delivery.status is DeliveryStatus.DEAD  # a refusal for good: not retried
    assert delivery.sent == 3
    assert delivery.error is not None
    assert "faulty refused 1 of 1 instances: 0x0122 for sop=" in delivery.error
