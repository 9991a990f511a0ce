"""One destination's delivery of a job's series (pipeline/delivery.py), against a real peer."""

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom.association import Association
from pynetdicom.sop_class import MRImageStorage

from dicomnode.config import Destination, RetrySettings, Settings
from dicomnode.db import (
    Database,
    DeliveryStatus,
    JobRecord,
    ReceivedInstance,
    engine,
    open_database,
)
from dicomnode.db.commitments import committed_uids
from dicomnode.db.delivered import delivered_uids
from dicomnode.db.instances import create_jobs_for_quiet_series, record_instance
from dicomnode.db.jobs import claim_next_job, finish_attempt, get_job, record_delivery
from dicomnode.db.records import SpooledInstance
from dicomnode.errors import ForwardError, UnreadableSpool
from dicomnode.forward import scu
from dicomnode.pipeline.delivery import Outgoing, deliver
from dicomnode.status import JobPart
from tests.support.data import pydicom_test_files
from tests.support.dcmtk import StoreScp
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.series import sop_instance_uid, write_ct_series


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


def _claimed_job(
    db: Database, first_file: Path, parts: tuple[JobPart, ...] = (JobPart.ORIGINALS,)
) -> JobRecord:
    """A claimed originals job for the series of `first_file` (the job's inputs come from the
    test itself: deliver() sends what it is given); a job of each other part too, unclaimed."""
    first = dcmread(first_file, stop_before_pixels=True)
    record_instance(
        db,
        ReceivedInstance(
            first.SOPInstanceUID,
            first.SOPClassUID,
            ExplicitVRLittleEndian,
            first.StudyInstanceUID,
            first.SeriesInstanceUID,
            "CT",
            first_file,
            first_file.stat().st_size,
            "MODALITY",
        ),
    )
    create_jobs_for_quiet_series(db, 0, ["faulty"], list(parts))
    job = claim_next_job(db, "test", 60, JobPart.ORIGINALS)
    assert job is not None
    return job


def _deliver_then_stop(peer: FaultyScp, db: Database, job: JobRecord, outgoing: Outgoing) -> None:
    """One delivery of `outgoing` to the running `peer`, which is stopped afterwards."""
    try:
        settings = Settings(
            destinations=[Destination("faulty", peer.ae_title, "127.0.0.1", peer.port)]
        )
        deliver(settings, db, job, "test", "faulty", outgoing)  # claimed by "test"
    finally:
        peer.stop()


def _send_failing_then_stop(peer: FaultyScp, items: list[SpooledInstance]) -> ForwardError:
    """The error of one `send_series` of `items` to the running `peer`, stopped afterwards."""
    try:
        destination = Destination("faulty", peer.ae_title, "127.0.0.1", peer.port)
        with pytest.raises(ForwardError) as caught:
            scu.send_series(1, destination, items, Settings())
    finally:
        peer.stop()
    return caught.value


def test_a_series_refused_for_good_does_not_keep_the_next_one_from_the_destination(
    tmp_path: Path,
) -> None:
    ct = write_ct_series(tmp_path / "ct", 3, size=32)
    mr = _mr_copy(ct[0], tmp_path / "mr.dcm")
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    job = _claimed_job(db, ct[0])
    peer = FaultyScp(behaviour=Behaviour(refuse_sop_class=MRImageStorage)).start()
    # the refused series first: it used to end the delivery before the others were sent
    _deliver_then_stop(peer, db, job, [_spooled([mr]), _spooled(ct)])

    assert set(peer.stored) == {dcmread(p).SOPInstanceUID for p in ct}
    [delivery] = get_job(db, job.id).deliveries
    assert delivery.status is DeliveryStatus.DEAD  # a refusal for good: not retried
    assert delivery.sent == 3
    assert delivery.error is not None
    assert "refused 1 of 1 instances: 0x0122 (SOP class not supported) for sop=" in delivery.error


def test_a_series_the_peer_takes_only_part_of_for_now_does_not_keep_the_next_one_back(
    tmp_path: Path,
) -> None:
    """A "try later" answer for an instance of the first series (the derived images, say) no
    longer keeps the job's next series (its metrics SR) from a PACS that is up and answering;
    the delivery is retried, naming that instance."""
    first = write_ct_series(tmp_path / "first", 3, size=32)
    second = [_mr_copy(first[0], tmp_path / "second.dcm")]
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    job = _claimed_job(db, first[0])
    stuck = dcmread(first[1]).SOPInstanceUID
    peer = FaultyScp(behaviour=Behaviour(status_for={stuck: 0xA702})).start()
    _deliver_then_stop(peer, db, job, [_spooled(first), _spooled(second)])

    everything = {dcmread(p).SOPInstanceUID for p in first + second}
    assert set(peer.stored) == everything - {stuck}
    [delivery] = get_job(db, job.id).deliveries
    assert delivery.status is DeliveryStatus.FAILED  # retried
    assert delivery.sent == 3
    assert delivery.error == (
        f"answered 0xA702 (out of resources) for sop={stuck} "
        "(1 of 3 instances not taken for now, 2 sent)"
    )


def test_a_sop_class_the_peer_does_not_take_is_its_refusal_and_the_rest_arrive(
    tmp_path: Path,
) -> None:
    """A PACS that takes no context for a class (MR here) refused it: told as its refusal, for
    good, not as a syntax we could not send, and the series' CT images still go."""
    ct = write_ct_series(tmp_path / "ct", 2, size=32)
    mr = _mr_copy(ct[0], tmp_path / "mr.dcm")
    peer = FaultyScp(sop_classes=[CTImageStorage]).start()
    error = _send_failing_then_stop(peer, _spooled([*ct, mr]))
    assert not error.transient and error.sent == 2
    assert str(error) == (
        f"refused 1 of 3 instances: no presentation context for SOP class "
        f"{MRImageStorage} (sop={dcmread(mr).SOPInstanceUID})"
    )


def test_spooled_files_that_cannot_be_read_are_named_and_do_not_keep_the_others_back(
    tmp_path: Path,
) -> None:
    broken = _spooled(write_ct_series(tmp_path / "broken", 5, size=32))
    intact = _spooled(write_ct_series(tmp_path / "intact", 2, size=32))  # the job's next series
    gone, not_dicom, no_meta = broken[1:4]
    gone.path.unlink()  # e.g. removed by hand from the data directory
    not_dicom.path.write_bytes(b"not a DICOM file any more")
    no_meta.path.write_bytes(bytes(128) + b"DICM")  # a preamble, then nothing
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    job = _claimed_job(db, broken[0].path)
    peer = FaultyScp().start()
    _deliver_then_stop(peer, db, job, [broken, intact])

    readable = {item.sop_instance_uid for item in [broken[0], broken[4], *intact]}
    assert set(peer.stored) == readable  # the PACS has every image the node can still read
    [delivery] = get_job(db, job.id).deliveries
    assert delivery.status is DeliveryStatus.FAILED  # tried again: the files may be put back
    assert delivery.sent == 4
    assert delivery.error is not None
    assert delivery.error.startswith("3 of 5 spooled files could not be read (2 of 5 sent): ")
    for item in (gone, not_dicom, no_meta):
        assert f"sop={item.sop_instance_uid} ({item.path})" in delivery.error
    assert "No such file or directory" in delivery.error


def test_a_file_that_fails_mid_message_ends_the_series_as_transient_and_says_how_far_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _spooled(write_ct_series(tmp_path / "ct", 4, size=32))
    real_store = scu._store

    def failing_on_the_second(assoc: Association, item: SpooledInstance, *args: int) -> int:
        if item is items[1]:  # as the reactor does when a read fails after the first fragment
            assoc.abort()
            raise OSError(5, "Input/output error")
        return real_store(assoc, item, *args)

    monkeypatch.setattr(scu, "_store", failing_on_the_second)
    peer = FaultyScp().start()
    error = _send_failing_then_stop(peer, items)

    assert isinstance(error, UnreadableSpool) and error.transient and error.sent == 1
    assert str(error).startswith(
        "1 of 4 spooled files could not be read (1 of 4 sent): "
        f"cannot read the spooled file of sop={items[1].sop_instance_uid} ({items[1].path}): "
        "[Errno 5] Input/output error"
    )
    assert set(peer.stored) == {items[0].sop_instance_uid}  # nothing after the abort


def _with_new_uid(source: Path, out: Path) -> Path:
    ds = dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(out)  # in the source's transfer syntax, big endian too
    return out


def test_a_pacs_that_takes_only_implicit_vr_gets_explicit_and_big_endian_files_converted(
    tmp_path: Path,
) -> None:
    """Implicit VR Little Endian is the one syntax every SCP must take (PS3.5 10.1), and some
    take nothing else: before, an Explicit VR series was not offered in it (the association
    failed, "accepted none", and the job was dead), and a big endian file crashed the send."""
    sources = {
        name: _with_new_uid(path, tmp_path / path.name)
        for name, file in (
            ("explicit", "MR_small.dcm"),
            ("big-endian", "MR_small_bigendian.dcm"),
            ("rle", "MR_small_RLE.dcm"),
        )
        for [path] in [pydicom_test_files(file)]
    }
    with StoreScp(tmp_path / "pacs", options=["+xi"]) as pacs:
        destination = Destination("implicit", "ANY-SCP", "127.0.0.1", pacs.port)
        for series in (["explicit"], ["big-endian", "rle"]):
            items = _spooled([sources[name] for name in series])
            report = scu.send_series(1, destination, items, Settings(destinations=[destination]))
            assert (report.sent, report.warnings) == (len(series), 0)
    received = {ds.SOPInstanceUID: ds for ds in map(dcmread, (tmp_path / "pacs").iterdir())}
    assert len(received) == 3
    for path in sources.values():
        source = dcmread(path)
        copy = received[source.SOPInstanceUID]
        assert copy.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert np.array_equal(copy.pixel_array, source.pixel_array)
        assert (copy.Rows, copy.PixelSpacing, copy.SliceLocation) == (
            source.Rows,
            source.PixelSpacing,
            source.SliceLocation,
        )


def test_a_peer_without_any_syntax_of_ours_is_named_with_the_syntaxes_offered(
    tmp_path: Path,
) -> None:
    [source] = pydicom_test_files("MR_small.dcm")
    peer = FaultyScp(transfer_syntaxes=[JPEG2000Lossless]).start()
    error = _send_failing_then_stop(peer, _spooled([source]))
    assert not error.transient
    assert (
        "accepted none of the proposed presentation contexts: MR Image Storage "
        "(1.2.840.10008.5.1.4.1.1.4) in Explicit VR Little Endian, Implicit VR Little Endian: "
        "transfer syntax(es) not supported"
    ) in str(error)


def test_a_peer_that_breaks_off_every_association_stops_the_series_saying_so(
    tmp_path: Path,
) -> None:
    """Past `MAX_BROKEN_OFF` instances the series stops; the error still says the peer broke
    off (before, it read like a timeout of ours) and how many were not tried."""
    series = write_ct_series(tmp_path / "series", 6, seed=3)
    with StoreScp(tmp_path / "pacs", options=["+xa", "--abort-after"]) as pacs:
        destination = Destination("aborts", "ANY-SCP", "127.0.0.1", pacs.port)
        with pytest.raises(ForwardError) as raised:
            scu.send_series(1, destination, _spooled(series), Settings())
    message = str(raised.value)
    assert raised.value.transient
    assert "broke off the association on 4 of 6 instances (0 sent, stopped there: " in (message)
    assert "2 not tried)" in message and "the peer ended the association first" in message


def test_an_instance_decoded_for_a_peer_stays_marked_lossy_when_its_syntax_said_so(
    tmp_path: Path,
) -> None:
    """A JPEG-LS near-lossless file without LossyImageCompression said it was lossy by its
    syntax alone: decoded for a PACS that takes only uncompressed, it arrived unmarked (a
    radiologist could take it for the original pixels). PS3.3 C.7.6.1.1.5: once lossy, "01"."""
    [near_lossless] = pydicom_test_files("JPEGLSNearLossless_16.dcm")
    source = dcmread(near_lossless)
    assert "LossyImageCompression" not in source
    peer = FaultyScp(transfer_syntaxes=[ExplicitVRLittleEndian], keep_data_sets=True).start()
    try:
        destination = Destination("faulty", peer.ae_title, "127.0.0.1", peer.port)
        scu.send_series(1, destination, _spooled([near_lossless]), Settings())
    finally:
        peer.stop()
    received = dcmread(DicomBytesIO(peer.data_sets[source.SOPInstanceUID]), force=True)
    assert received.LossyImageCompression == "01"
    assert received.LossyImageCompressionMethod == "ISO_14495_1"
    ratio = len(received.PixelData) / len(source.PixelData)  # decoded / as it came
    assert float(received.LossyImageCompressionRatio) == pytest.approx(ratio, abs=0.01)
    assert received.SOPInstanceUID == source.SOPInstanceUID


def test_a_peer_without_the_compressed_syntax_gets_the_same_instance_decoded_or_a_refusal(
    tmp_path: Path,
) -> None:
    # The uncompressed fallback (PS3.5 10: every SCP takes Implicit VR Little Endian).
    [rle] = pydicom_test_files("MR_small_RLE.dcm")
    good, bad = dcmread(rle), dcmread(rle)
    for ds, name in ((good, "good.dcm"), (bad, "bad.dcm")):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / name, enforce_file_format=True)
    bad.PixelData = encapsulate([b"no RLE header here"])
    bad.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    items = _spooled([tmp_path / "good.dcm", tmp_path / "bad.dcm"])
    peer = FaultyScp(transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian]).start()
    error = _send_failing_then_stop(peer, items)

    assert not error.transient  # a file that will not decode never will
    assert f"cannot decompress sop={bad.SOPInstanceUID} for the uncompressed fallback" in str(error)
    # ours, not the peer's: it refused nothing
    assert str(error).startswith("1 of 2 instances cannot be sent in a transfer syntax")
    # the same instance (pydicom's decompress() would give it a new UID), decoded
    assert peer.syntax == {good.SOPInstanceUID: ExplicitVRLittleEndian}


def test_an_outcome_the_database_cannot_take_at_once_is_recorded_when_it_answers_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database away when the sending ends (here: SQLite locked past its busy timeout by
    another process): the outcome is written once it answers again. Before, the write was
    given up, the job stayed "forwarding" until its lease lapsed and was then sent again."""
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_SECONDS", 1)
    database = tmp_path / "n.db"
    db = open_database(f"sqlite:///{database}")
    series = write_ct_series(tmp_path / "series", 2, size=64)
    job = _claimed_job(db, series[0])
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    outage = threading.Timer(3, other.rollback)
    outage.start()
    try:
        with StoreScp(tmp_path / "pacs") as pacs:
            pacs_at = Destination("faulty", "STORESCP", "127.0.0.1", pacs.port)  # the job's
            deliver(Settings(destinations=[pacs_at]), db, job, "test", "faulty", [_spooled(series)])
    finally:
        outage.join()
        other.close()

    finished = get_job(db, job.id)
    assert finished is not None
    assert [(d.status, d.sent) for d in finished.deliveries] == [("done", 2)]


def _destination(peer: FaultyScp, **options: bool) -> Destination:
    return Destination("faulty", peer.ae_title, "127.0.0.1", peer.port, **options)


def test_what_one_peer_stored_is_no_reason_to_send_another_less(tmp_path: Path) -> None:
    """The PACS filled up mid-series; the admin points the destination at its standby (another
    AE title, host or port): the retry sends the standby the whole series."""
    ct = write_ct_series(tmp_path / "ct", 4, size=32)
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    job = _claimed_job(db, ct[0])
    full = FaultyScp(behaviour=Behaviour(status_for={dcmread(ct[3]).SOPInstanceUID: 0xA700}))
    _deliver_then_stop(full.start(), db, job, [_spooled(ct)])
    assert len(delivered_uids(db, job.id, "faulty", _destination(full).peer)) == 3

    standby = FaultyScp().start()
    try:
        settings = Settings(destinations=[_destination(standby)])
        deliver(settings, db, job, "test", "faulty", [_spooled(ct)])
    finally:
        standby.stop()
    assert set(standby.stored) == {dcmread(p).SOPInstanceUID for p in ct}
    [delivery] = get_job(db, job.id).deliveries
    assert (delivery.status, delivery.sent) == (DeliveryStatus.DONE, 4)


def test_sent_counts_what_the_peer_stored_before_when_the_retry_stops_at_once(
    tmp_path: Path,
) -> None:
    """Two series, the first one instance short; the retry finds the PACS down before its first
    series: the delivery still says 3 of them are there."""
    ct = write_ct_series(tmp_path / "ct", 4, size=32)
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    job = _claimed_job(db, ct[0])
    peer = FaultyScp(behaviour=Behaviour(status_for={dcmread(ct[0]).SOPInstanceUID: 0xA700}))
    outgoing = [_spooled(ct[:2]), _spooled(ct[2:])]
    _deliver_then_stop(peer.start(), db, job, outgoing)  # stopped: down for the retry
    deliver(Settings(destinations=[_destination(peer)]), db, job, "test", "faulty", outgoing)
    [delivery] = get_job(db, job.id).deliveries
    assert delivery.status is DeliveryStatus.FAILED and delivery.error is not None
    assert "connection refused" in delivery.error
    assert delivery.sent == 3


def test_a_destination_with_storage_commitment_has_what_it_stored_recorded_not_committed(
    tmp_path: Path,
) -> None:
    """It stored every instance but confirmed none (no commitment service): what it stored is
    recorded, so that a retry asks for them again instead of sending them again; none counts
    as committed (an admin's retry sends the series whole)."""
    ct = write_ct_series(tmp_path / "ct", 2, size=32)
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    job = _claimed_job(db, ct[0])
    peer = FaultyScp().start()
    try:
        settings = Settings(destinations=[_destination(peer, storage_commitment=True)])
        deliver(settings, db, job, "test", "faulty", [_spooled(ct)])
    finally:
        peer.stop()
    assert len(peer.stored) == 2
    [delivery] = get_job(db, job.id).deliveries
    assert delivery.status is DeliveryStatus.DEAD  # it takes no commitment request at all
    stored = {sop_instance_uid(path) for path in ct}
    assert delivered_uids(db, job.id, "faulty", _destination(peer).peer) == stored
    assert committed_uids(db, job.id, "faulty") == set()


def test_a_derived_series_that_waits_for_its_originals_leaves_their_schedule_alone(
    db: Database, tmp_path: Path
) -> None:
    """A PACS that answers a C-ECHO may still refuse the originals' stores (out of resources):
    a derived try that waited for them used to bring their next attempt forward each time, and
    with it spent their retries early (an outage walk-through: 12 attempts in 111 s, dead
    before the PACS accepted, the derived series then sent without them)."""
    [ct] = write_ct_series(tmp_path / "series", 1, size=64)
    originals = _claimed_job(db, ct, parts=(JobPart.ORIGINALS, JobPart.DERIVED))
    record_delivery(db, originals.id, "test", "faulty", DeliveryStatus.FAILED, 0, "0xA700")
    an_hour = RetrySettings(initial_delay_seconds=3600, jitter=0)
    finish_attempt(db, originals.id, "test", an_hour)
    before = get_job(db, originals.id)
    derived = claim_next_job(db, "test", 60, JobPart.DERIVED)
    assert before is not None and derived is not None
    peer = FaultyScp().start()  # answers a C-ECHO
    _deliver_then_stop(peer, db, derived, [_spooled([ct])])
    waited = get_job(db, derived.id)
    assert waited is not None and peer.stored == {}
    assert (waited.deliveries[0].error or "").startswith(
        f"waits for the originals of its series (job {originals.id})"
    )
    after = get_job(db, originals.id)
    assert after is not None and after.next_attempt_at == before.next_attempt_at  # an hour off
