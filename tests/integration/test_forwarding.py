"""End to end on loopback: storescu → dicomnode → a real Orthanc, checked through its REST API."""

import time
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.conftest import ON_BOTH_DATABASES, pacs_destination
from tests.support.dcmtk import storescu
from tests.support.orthanc import Orthanc
from tests.support.scu import c_store


def all_done(count: int):  # type: ignore[no-untyped-def]
    return lambda jobs: len(jobs) >= count and all(j["status"] == "done" for j in jobs)


def orthanc_datasets(orthanc: Orthanc) -> dict[str, object]:
    files = (dcmread(BytesIO(orthanc.instance_file(i))) for i in orthanc.instance_ids())
    return {str(ds.SOPInstanceUID): ds for ds in files}


def test_ct_series_arrives_at_orthanc_identical_and_job_is_done(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory([pacs_destination(orthanc)]).start()
    sent = storescu(node.port, ct_series)
    assert sent.returncode == 0, sent.stderr

    [job] = node.wait_for_jobs(all_done(1))
    assert job["instances"] == len(ct_series)
    assert job["attempts"] == 1 and job["error"] is None
    assert job["deliveries"] == [
        {**job["deliveries"][0], "destination": "pacs", "status": "done", "sent": len(ct_series)}
    ]

    received = orthanc_datasets(orthanc)
    assert len(received) == len(ct_series)
    for path in ct_series:
        original = dcmread(path)
        arrived = received[str(original.SOPInstanceUID)]
        assert arrived.PixelData == original.PixelData
        # every data element (file meta aside) is identical, tag by tag, value by value
        assert [(e.tag, e.VR, e.value) for e in arrived if e.tag != 0x7FE00010] == [
            (e.tag, e.VR, e.value) for e in original if e.tag != 0x7FE00010
        ]


def test_compressed_instances_are_kept_and_forwarded_in_their_transfer_syntax(
    node_factory, orthanc: Orthanc
) -> None:
    # storescu proposes a compressed syntax only when told which (and never converts to it).
    # These files share one SOP Instance UID, so each is checked at Orthanc before the next.
    proposals = {
        "MR_small_RLE.dcm": "-xr",
        "MR_small_jp2klossless.dcm": "-xv",
        "JPEG2000.dcm": "-xw",
    }
    node = node_factory([pacs_destination(orthanc)]).start()
    for count, (name, option) in enumerate(proposals.items(), start=1):
        original = dcmread(get_testdata_file(name))
        sent = storescu(node.port, [Path(get_testdata_file(name))], extra=[option])
        assert sent.returncode == 0, sent.stderr
        node.wait_for_jobs(all_done(count))
        arrived = orthanc_datasets(orthanc)[str(original.SOPInstanceUID)]
        assert arrived.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert arrived.PixelData == original.PixelData


def test_resent_series_replaces_files_and_reaches_orthanc_once(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory([pacs_destination(orthanc)]).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(all_done(1))
    assert storescu(node.port, ct_series).returncode == 0
    jobs = node.wait_for_jobs(all_done(2))
    assert [j["instances"] for j in jobs] == [len(ct_series)] * 2
    spooled = list((node.data_dir / "spool" / "instances").rglob("*.dcm"))
    assert len(spooled) == len(ct_series)
    assert len(orthanc.instance_ids()) == len(ct_series)


def test_instances_of_two_series_make_two_jobs(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    from tests.support.series import write_ct_series

    first = write_ct_series(tmp_path / "a", 3, seed=1)
    second = write_ct_series(tmp_path / "b", 4, seed=2)
    node = node_factory([pacs_destination(orthanc)]).start()
    assert storescu(node.port, first + second).returncode == 0
    jobs = node.wait_for_jobs(all_done(2))
    assert sorted(j["instances"] for j in jobs) == [3, 4]
    assert len(orthanc.instance_ids()) == 7


def test_keep_policy_acknowledges_a_resent_instance_but_keeps_the_first_copy(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    node = node_factory([], node={"on_duplicate": "keep"}).start()
    assert storescu(node.port, ct_series[:1]).returncode == 0
    changed = dcmread(ct_series[0])
    changed.PixelData = bytes(len(changed.PixelData))
    resent = tmp_path / "changed.dcm"
    changed.save_as(resent)
    result = storescu(node.port, [resent])
    assert result.returncode == 0, result.stderr  # acknowledged: the sender must not retry
    [spooled] = (node.data_dir / "spool" / "instances").rglob("*.dcm")
    assert dcmread(spooled).PixelData == dcmread(ct_series[0]).PixelData
    assert "duplicate kept (first copy wins)" in node.log()


def _copy_of(source: Path, out: Path, series_uid: str | None = None) -> Path:
    """`source`'s SOP Instance UID on other pixels (and in another series, if given)."""
    ds = dcmread(source)
    ds.PixelData = bytes(len(ds.PixelData))
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    ds.save_as(out)
    return out


@ON_BOTH_DATABASES
def test_another_senders_copy_for_another_series_is_refused_as_a_uid_collision(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    """It took the first copy's place in its series, under the job that had finished (or
    failed) with it; it is refused now. The same sender's copy, or any sender's for the same
    series (a PACS sending the series back), still replaces it; `on_duplicate = "replace"`
    takes them all."""
    node = node_factory([], node={"receive_only": True}).start()
    assert storescu(node.port, ct_series[:2], calling_aet="CT_A").returncode == 0
    node.wait_for_jobs(all_done(1))
    first = dcmread(ct_series[0])
    colliding = _copy_of(ct_series[0], tmp_path / "colliding.dcm", generate_uid())

    status = c_store(node.port, colliding, calling_aet="CT_B")
    # Refused: its sender must not take it for stored (nor ask for its commitment).
    assert status is not None and status.Status == 0xC000
    assert status.ErrorComment.startswith("UID collision: stored from CT_A in another series")
    [spooled] = [p for p in node.data_dir.rglob("*.dcm") if p.stem == first.SOPInstanceUID]
    assert first.SeriesInstanceUID in spooled.parts
    assert dcmread(spooled).PixelData == first.PixelData
    colliding_series = str(dcmread(colliding, stop_before_pixels=True).SeriesInstanceUID)
    assert not [d for d in node.data_dir.rglob(colliding_series)]  # no folder left behind
    said = node.wait_for_log("C-STORE failed status=0xC000")
    assert (
        f"calling_aet=CT_B: UID collision: stored from CT_A in another series "
        f"(series={first.SeriesInstanceUID}, this copy's series={colliding_series})"
    ) in said
    time.sleep(4)  # past series_quiet_seconds: no job for the colliding copy's series
    assert len(node.jobs()) == 1

    resent = _copy_of(ct_series[0], tmp_path / "resent.dcm")  # same series, from the PACS
    assert storescu(node.port, [resent], calling_aet="PACS").returncode == 0
    jobs = node.wait_for_jobs(all_done(2))
    assert [job["instances"] for job in jobs] == [2, 2]
    assert dcmread(spooled).PixelData == bytes(len(first.PixelData))


def test_with_replace_another_senders_copy_moves_the_instance_to_its_series(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    node = node_factory([], node={"on_duplicate": "replace"}).start()
    assert storescu(node.port, ct_series[:1], calling_aet="CT_A").returncode == 0
    other_series = generate_uid()
    moved = _copy_of(ct_series[0], tmp_path / "moved.dcm", other_series)
    assert storescu(node.port, [moved], calling_aet="CT_B").returncode == 0
    node.wait_for_log("duplicate moved to another series")
    [spooled] = node.data_dir.rglob("*.dcm")
    assert other_series in spooled.parts


def test_a_series_that_grew_reaches_the_pacs_with_a_report_that_names_the_one_it_replaces(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    """A modality that sends a series in two parts, minutes apart: two jobs each, two reports
    at the PACS (it keeps both); the second names the first as its predecessor (an acceptance
    run found nothing that told them apart)."""
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["baseline"], "qa_action": "flag", "self_check": False},
    ).start()
    assert storescu(node.port, ct_series[:1]).returncode == 0
    node.wait_for_jobs(all_done(2))
    assert storescu(node.port, ct_series[1:]).returncode == 0
    node.wait_for_jobs(all_done(4))
    reports: list[Any] = [ds for ds in orthanc_datasets(orthanc).values() if _is_sr(ds)]
    [second] = [ds for ds in reports if "PredecessorDocumentsSequence" in ds]
    [first] = [ds for ds in reports if ds is not second]
    [study] = second.PredecessorDocumentsSequence
    [series] = study.ReferencedSeriesSequence
    assert [item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence] == [
        first.SOPInstanceUID
    ]


def _is_sr(ds: Any) -> bool:
    return str(ds.Modality) == "SR"
