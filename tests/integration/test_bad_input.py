"""Bad input never takes the node down, never costs a good study, never escapes the spool.

A raw pynetdicom SCU sends every file of pydicom's test corpus plus generated malformed instances
(one association each, proposing the file's own class and transfer syntax) while storescu sends a
good CT series at the same time. Each bad instance either gets a failure status or is stored; a
stored one ends in a job that is done (forwarded unchanged, enhancement skipped with a reason) or
failed/dead with an error naming it.
"""

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.conftest import pacs_destination
from tests.support.data import pydicom_test_files
from tests.support.dcmtk import StoreScp, echoscu, storescu
from tests.support.metrics import Scrape
from tests.support.orthanc import Orthanc
from tests.support.scu import c_store
from tests.support.series import CT_TEMPLATE, write_ct_series


def malformed(folder: Path) -> list[Path]:
    """Generated instances that break one rule each (names say which)."""
    folder.mkdir()

    def variant(name: str, change) -> Path:  # type: ignore[no-untyped-def]
        ds = dcmread(CT_TEMPLATE)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = generate_uid()
        change(ds)
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=False)
        return path

    def truncated(ds):  # type: ignore[no-untyped-def]
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]

    def no_pixels(ds):  # type: ignore[no-untyped-def]
        del ds.PixelData

    def bits_stored_too_big(ds):  # type: ignore[no-untyped-def]
        ds.BitsStored, ds.HighBit = 20, 19

    def high_bit_wrong(ds):  # type: ignore[no-untyped-def]
        ds.HighBit = 3

    def length_mismatch(ds):  # type: ignore[no-untyped-def]
        ds.Rows = ds.Rows * 2

    def huge(ds):  # type: ignore[no-untyped-def]
        ds.Rows = ds.Columns = 65535

    def path_uid(ds):  # type: ignore[no-untyped-def]
        ds.SOPInstanceUID = "1.2.3/../../../../tmp/escaped"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    def series_path_uid(ds):  # type: ignore[no-untyped-def]
        ds.SeriesInstanceUID = "../../escaped"

    def empty_uids(ds):  # type: ignore[no-untyped-def]
        ds.StudyInstanceUID = ""
        ds.PatientName = ""

    def zero_length_pixels(ds):  # type: ignore[no-untyped-def]
        ds.PixelData = b""

    def unknown_syntax(ds):  # type: ignore[no-untyped-def]
        ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.77"  # nobody's syntax

    changes = {
        "truncated_pixel_data": truncated,
        "missing_pixel_data": no_pixels,
        "bits_stored_above_allocated": bits_stored_too_big,
        "high_bit_wrong": high_bit_wrong,
        "pixel_length_mismatch": length_mismatch,
        "huge_rows_columns": huge,
        "uid_with_path_characters": path_uid,
        "series_uid_with_path_characters": series_path_uid,
        "empty_uids_and_name": empty_uids,
        "zero_length_pixel_data": zero_length_pixels,
        "unknown_transfer_syntax": unknown_syntax,
    }
    return [variant(name, change) for name, change in changes.items()]


BROKEN_PIXELS = (
    "truncated_pixel_data",
    "missing_pixel_data",
    "bits_stored_above_allocated",
    "high_bit_wrong",
    "pixel_length_mismatch",
    "huge_rows_columns",
    "zero_length_pixel_data",
)


REFUSED_BY_DESIGN = (
    "uid_with_path_characters",
    "series_uid_with_path_characters",
    "empty_uids_and_name",
)


def stored_by(result: subprocess.CompletedProcess[str]) -> set[str]:
    """File names a verbose storescu run got Success (or a warning) for."""
    stored, current = set(), None
    for line in result.stderr.splitlines():
        if line.startswith("I: Sending file: "):
            current = Path(line.removeprefix("I: Sending file: ").strip()).name
        elif current and re.match(r"I: Received Store Response \((Success|Warning)", line):
            stored.add(current)
    return stored


def send_raw(port: int, path: Path) -> int | None:
    """C-STORE one file as its bytes; the status, or None when it could not be sent at all."""
    status = c_store(port, path, calling_aet="BADSCU")
    return None if status is None else int(status.Status)


@pytest.mark.slow
def test_bad_instances_get_a_status_or_a_clear_job_error_and_good_ones_still_arrive(
    tmp_path: Path, node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["baseline"], "self_check": False},
        retry={"max_attempts": 2},
    ).start()
    corpus = pydicom_test_files("*.dcm") + malformed(tmp_path / "malformed")

    good: dict[str, object] = {}
    sender = threading.Thread(target=lambda: good.update(result=storescu(node.port, ct_series)))
    sender.start()
    statuses = {path.name: send_raw(node.port, path) for path in corpus}
    sender.join()
    # A syntax nobody knows: its presentation context is refused, so nothing can be sent.
    # (storescu below sends the same file re-encoded in a syntax it knows, and that is stored.)
    assert statuses["unknown_transfer_syntax.dcm"] is None
    unknown = str(dcmread(tmp_path / "malformed" / "unknown_transfer_syntax.dcm").SOPInstanceUID)
    assert not list(node.data_dir.rglob(f"{unknown}.dcm"))
    # The same corpus again through DCMTK, one association, not stopping at failures; the node
    # must refuse nothing that DCMTK's own storescp takes, except what it refuses by design.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for index, path in enumerate(corpus):
        shutil.copy(path, bundle / f"{index:03d}-{path.name}")
    dcmtk_options = ["--no-halt", "--required", "-v"]
    by_node = stored_by(storescu(node.port, bundle, extra=dcmtk_options))
    with StoreScp(tmp_path / "storescp") as reference:
        by_dcmtk = stored_by(storescu(reference.port, bundle, extra=dcmtk_options))
    assert len(by_dcmtk) >= 30  # storescu cannot send about half (no codec to convert them)
    refused_by_design = {f"{name}.dcm" for name in REFUSED_BY_DESIGN}
    assert {name.split("-", 1)[1] for name in by_dcmtk - by_node} == refused_by_design

    assert good["result"].returncode == 0, good["result"].stderr  # type: ignore[attr-defined]
    assert echoscu(node.port).returncode == 0  # the listener is still up
    assert statuses["uid_with_path_characters.dcm"] not in (None, 0x0000)
    assert statuses["series_uid_with_path_characters.dcm"] not in (None, 0x0000)
    assert statuses["empty_uids_and_name.dcm"] not in (None, 0x0000)

    # Every series asserted on below must have its jobs first: the last ones sent become
    # complete seconds after the others' jobs may all be done.
    broken = {
        str(dcmread(tmp_path / "malformed" / f"{name}.dcm", force=True).SeriesInstanceUID)
        for name in BROKEN_PIXELS
        if statuses[f"{name}.dcm"] == 0x0000
    }
    jobs = node.wait_for_jobs(
        lambda js: (
            js
            and all(j["status"] in ("done", "dead", "cancelled") for j in js)
            and any(j["instances"] == len(ct_series) and j["status"] == "done" for j in js)
            and broken <= {j["series_uid"] for j in js}
        ),
        timeout=300,
    )
    for job in jobs:
        if job["status"] == "dead":
            assert "sop=" in job["error"] or "0x" in job["error"], job
        if job["status"] == "cancelled":  # the corpus reuses UIDs: later copies supersede
            assert job["error"].startswith("superseded by job"), job
        for skipped in (job["details"] or {}).get("skipped", []):
            assert skipped["reason"].startswith(f"sop={skipped['sop']}"), skipped
    # The good series arrived whole, next to whatever the bad ones did.
    good_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct_series}
    arrived = set()
    for orthanc_id in orthanc.instance_ids():
        tags = orthanc.get(f"/instances/{orthanc_id}/simplified-tags").json()
        arrived.add(tags.get("SOPInstanceUID"))
    assert good_uids <= arrived
    # Nothing was written outside the node's data folder.
    assert not list(Path("/tmp").glob("escaped*"))
    assert not list(node.data_dir.parent.glob("escaped*"))
    # Every stored image whose pixels are unusable was forwarded unchanged, its reason recorded.
    skipped = {
        item["sop"]: item["reason"]
        for job in jobs
        for item in (job["details"] or {}).get("skipped", [])
    }
    for name in BROKEN_PIXELS:
        if statuses[f"{name}.dcm"] == 0x0000:
            sop = str(dcmread(tmp_path / "malformed" / f"{name}.dcm", force=True).SOPInstanceUID)
            assert sop in skipped, name
            assert sop in arrived, name
    # A series none of whose images could be read says so in the log, naming the first, an
    # instance the node holds. (Not checked against `skipped`: the DCMTK round above sends the
    # corpus again, and its jobs may log after the listing was read.)
    told = [line for line in node.log().splitlines() if "no image of the series could be" in line]
    assert told and all("declined, the first sop=" in line for line in told), told
    named = {line.split(", the first sop=")[1].split(":")[0] for line in told}
    assert all(list(node.data_dir.rglob(f"{sop}.dcm")) for sop in named), named
    # A traceback in the log always follows a line that says which job or instance it was.
    lines = node.log().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            shown = "\n".join(lines[index - 1 : index + 40])  # the traceback, to diagnose it
            assert "job=" in lines[index - 1] or "sop=" in lines[index - 1], shown


def test_with_originals_off_what_cannot_be_enhanced_is_still_forwarded_unchanged(
    tmp_path: Path, node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    broken = dcmread(ct_series[0])  # same series, pixel data cut short
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    broken.InstanceNumber = 99
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]
    broken_path = tmp_path / "broken.dcm"
    broken.save_as(broken_path)
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["baseline"], "self_check": False, "forward_originals": False},
    ).start()
    assert storescu(node.port, [*ct_series, broken_path]).returncode == 0

    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
    [skipped] = job["details"]["skipped"]
    assert skipped["sop"] == broken.SOPInstanceUID
    assert "pixel data cannot be decoded" in skipped["reason"]
    arrived = set(orthanc.sop_instance_uids())
    originals = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct_series}
    assert broken.SOPInstanceUID in arrived  # unchanged: nothing derived stands for it
    assert not originals & arrived  # their derived images do
    assert len(arrived) == 1 + len(ct_series) + 1  # broken + derived + metrics report


def test_with_originals_off_a_failing_enhancement_sends_the_series_as_received(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    """With forward_originals = false the PACS gets the series only through the derived job:
    when its enhancement fails (here the outbox cannot be written), the series goes as it came
    and the job ends done with the reason. Before, the job was retried for about an hour and
    then dead, and the PACS never got the study."""
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["baseline"], "self_check": False, "forward_originals": False},
        http={"enabled": True},
    ).start()
    outbox = node.data_dir / "spool" / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.write_bytes(b"not a folder")  # every derived file fails to be written
    assert storescu(node.port, ct_series).returncode == 0

    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
    assert job["attempts"] == 1 and job["error"] is None
    enhancement = job["details"]["enhancement"]
    assert enhancement.startswith("skipped: enhancement failed: "), enhancement
    assert enhancement.endswith("; the series went as received")
    originals = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct_series}
    assert set(orthanc.sop_instance_uids()) == originals
    assert "series sent as received job=1" in node.log()
    assert Scrape(node.http_port).value("dicomnode_enhancements_failed_total") == 1


def _claiming(folder: Path, name: str, **meta: str) -> tuple[Path, str]:
    """A CT instance whose file meta (what the C-STORE request names) claims `meta`; returns
    the file and the data set's own SOP Instance UID."""
    ds = dcmread(CT_TEMPLATE)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in meta.items():
        if keyword == "DataSetSOPClassUID":
            if value:
                ds.SOPClassUID = value
            else:
                del ds.SOPClassUID
        else:
            setattr(ds.file_meta, keyword, value)
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return path, str(ds.SOPInstanceUID)


def test_a_data_set_that_is_not_what_its_request_names_is_refused_as_dcmtk_does(
    tmp_path: Path, node_factory
) -> None:
    """The request's Affected SOP Class/Instance UID and the data set's must agree (A900; a
    data set without a SOP Class UID: C000), and only storage SOP classes are stored (0122):
    filed under one identity, such an instance could never be delivered as the other."""
    node = node_factory([]).start()
    folder = tmp_path / "claims"
    folder.mkdir()
    mr = "1.2.840.10008.5.1.4.1.1.4"
    cases = {
        "instance_uid_differs": (
            _claiming(folder, "instance_uid_differs", MediaStorageSOPInstanceUID=generate_uid()),
            0xA900,
        ),
        "sop_class_differs": (
            _claiming(folder, "sop_class_differs", MediaStorageSOPClassUID=mr),
            0xA900,
        ),
        "no_sop_class": (_claiming(folder, "no_sop_class", DataSetSOPClassUID=""), 0xC000),
        "verification": (
            _claiming(
                folder,
                "verification",
                MediaStorageSOPClassUID="1.2.840.10008.1.1",
                DataSetSOPClassUID="1.2.840.10008.1.1",
            ),
            0x0122,
        ),
        "agrees": (_claiming(folder, "agrees"), 0x0000),
    }
    with StoreScp(tmp_path / "storescp") as reference:  # what DCMTK answers to the same
        dcmtk = {
            name: c_store(reference.port, path, as_file_meta_says=True)
            for name, ((path, _), _) in cases.items()
        }
    for name, ((path, sop), expected) in cases.items():
        status = c_store(node.port, path, calling_aet="BADSCU", as_file_meta_says=True)
        assert status is not None and int(status.Status) == expected, name
        if name != "verification":  # storescp +xa files even a C-STORE of Verification
            assert dcmtk[name] is not None and int(dcmtk[name].Status) == expected, name
        stored = list(node.data_dir.rglob(f"{sop}.dcm"))
        assert len(stored) == (expected == 0x0000), name
        if expected:
            assert "ErrorComment" in status, name
    assert "C-STORE failed status=0xA900" in node.log()
    assert "is not the request's AffectedSOPInstanceUID" in node.log()
    assert "1.2.840.10008.1.1 is not a storage SOP class" in node.log()


def _written(path: Path, ds: Dataset, syntax: str) -> Path:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def test_truncated_or_misdeclared_data_sets_are_refused_and_a_long_deflated_header_is_read(
    tmp_path: Path, node_factory
) -> None:
    """The receiver walks every top-level element of what it acknowledges (only their headers,
    the pixels stay raw), so bytes cut short or encoded otherwise than the transfer syntax says
    get C000 instead of a Success that no destination would ever take; a deflated data set
    whose identifying elements lie past the first MiB is read far enough to find them."""
    node = node_factory([]).start()
    folder = tmp_path / "structure"
    folder.mkdir()

    def ct() -> Dataset:
        ds = dcmread(CT_TEMPLATE)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        return ds

    good = _written(folder / "good.dcm", ct(), ExplicitVRLittleEndian)
    truncated = _written(folder / "truncated.dcm", ct(), ExplicitVRLittleEndian)
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    cut_in_name = _written(folder / "cut_in_name.dcm", ct(), ExplicitVRLittleEndian)
    name = dcmread(cut_in_name).get_item("PatientName")  # its value's bytes, as written
    raw = cut_in_name.read_bytes()
    cut_in_name.write_bytes(raw[: raw.index(b"\x10\x00\x10\x00PN") + 8 + len(name.value) // 2])
    trailing = _written(folder / "trailing.dcm", ct(), ExplicitVRLittleEndian)
    trailing.write_bytes(trailing.read_bytes() + b"\xe0\x7f\x10")  # a header cut short
    misdeclared = folder / "explicit_declared_implicit.dcm"
    explicit = ct()
    _written(misdeclared, explicit, ExplicitVRLittleEndian)
    raw = misdeclared.read_bytes()  # the meta's transfer syntax UID, swapped in place (same length)
    misdeclared.write_bytes(
        raw.replace(
            str(ExplicitVRLittleEndian).encode() + b"\0",
            str(ImplicitVRLittleEndian).encode() + b"\0\0\0",
            1,
        )
    )
    long_header = ct()  # ~1.8 MB of references before (0020,000D) once inflated
    long_header.ReferencedImageSequence = []
    for _ in range(20000):
        reference = Dataset()
        reference.ReferencedSOPClassUID = long_header.SOPClassUID
        reference.ReferencedSOPInstanceUID = generate_uid()
        long_header.ReferencedImageSequence.append(reference)
    deflated = _written(
        folder / "deflated_long_header.dcm", long_header, DeflatedExplicitVRLittleEndian
    )
    cases = {
        good: 0x0000,
        truncated: 0xC000,
        cut_in_name: 0xC000,
        trailing: 0xC000,
        misdeclared: 0xC000,
        deflated: 0x0000,
    }
    for path, expected in cases.items():
        status = c_store(node.port, path, calling_aet="BADSCU", as_file_meta_says=True)
        assert status is not None and int(status.Status) == expected, path.name
        sop = str(
            dcmread(path, stop_before_pixels=True, force=True).file_meta.MediaStorageSOPInstanceUID
        )
        assert len(list(node.data_dir.rglob(f"{sop}.dcm"))) == (expected == 0x0000), path.name
    assert "the data set is truncated or not in Explicit VR Little Endian" in node.log()
    assert "the data set cannot be decoded as Implicit VR Little Endian" in node.log()
    assert "ends 5000 bytes past the end of the data set" in node.log()
    # Cut inside a small value (read short, not skipped), it is called truncated too, not a
    # data set without the UIDs that came after the cut.
    cut = f"(0010,0010) ends {len(name.value) - len(name.value) // 2} bytes past the end"
    assert cut in node.log(), node.log()[-2000:]
    assert "it ends with 3 bytes after its last element (7FE0,0010), too few" in node.log()


def _associate_and_release(ae: AE, port: int) -> None:
    """An association that sends nothing: what it proposed is all the node sees."""
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    assoc.release()


def test_a_transfer_syntax_no_pacs_could_be_sent_is_refused_at_association(node_factory) -> None:
    """JPEG XL (no decoder here) is refused in the A-ASSOCIATE-AC, as DCMTK's storescp +xa and
    Orthanc do: the modality sends in the syntax it proposed beside it. Taken, the instance
    could reach no PACS that does not take JPEG XL itself (it could not be decoded for one)."""
    node = node_factory([]).start()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.4.110")  # JPEG XL Lossless
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    try:
        assert assoc.is_established
        assert [(cx.transfer_syntax[0], cx.result) for cx in assoc.accepted_contexts] == [
            (ExplicitVRLittleEndian, 0x00)
        ]
        [refused] = assoc.rejected_contexts
        assert refused.result == 0x04  # transfer syntaxes not supported (PS3.8 9.3.3.2)
    finally:
        assoc.release()
    assert "presentation context refused" not in node.log()  # CT goes in Explicit VR

    only = AE(ae_title="MODALITY")  # MR in JPEG XL only: MR cannot come from this modality
    only.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.4.110")
    only.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    for _ in range(2):
        _associate_and_release(only, node.port)
    refused_line = (
        "presentation context refused: MR Image Storage (1.2.840.10008.5.1.4.1.1.4) in JPEG XL "
        "Lossless (1.2.840.10008.1.2.4.110)"
    )
    assert node.log().count(refused_line) == 1  # once per calling AE and class

    viewer = AE(ae_title="VIEWER")  # a viewer that took the node for a PACS: C-FIND, C-MOVE
    for query in (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
    ):
        viewer.add_requested_context(query, ExplicitVRLittleEndian)
    viewer.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    _associate_and_release(viewer, node.port)
    not_storage = (
        "in Explicit VR Little Endian (1.2.840.10008.1.2.1): not a storage SOP class: the node "
        "takes C-STORE, C-ECHO and Storage Commitment only (no query/retrieve: ask the PACS)"
    )
    [told] = [line for line in node.log().splitlines() if "calling_aet=VIEWER" in line]
    assert f"(1.2.840.10008.5.1.4.1.2.2.1) {not_storage}; " in told  # both in one line
    assert told.endswith(
        f"(1.2.840.10008.5.1.4.1.2.2.2) {not_storage} (told once per calling AE) calling_aet=VIEWER"
    )
    assert f"{refused_line}: no transfer syntax proposed is one the node can deliver" in node.log()


def test_a_syntax_the_site_lists_is_taken_and_stored_as_it_came(
    node_factory, tmp_path: Path
) -> None:
    """node.extra_transfer_syntaxes: a site whose PACS takes JPEG 2000 Part 2 (refused by
    default: no decoder here) has it taken too."""
    part_2 = "1.2.840.10008.1.2.4.92"
    node = node_factory([], node={"extra_transfer_syntaxes": [part_2]}).start()
    ds = dcmread(write_ct_series(tmp_path / "ct", 1, size=64)[0])
    ds.file_meta.TransferSyntaxUID = part_2
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])  # stands in for a codestream
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, part_2)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    try:
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [part_2]
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    [stored] = node.data_dir.rglob(f"{ds.SOPInstanceUID}.dcm")
    assert dcmread(stored).file_meta.TransferSyntaxUID == part_2
    assert "presentation context refused" not in node.log()
