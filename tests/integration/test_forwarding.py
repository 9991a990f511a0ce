"""End to end on loopback: storescu → dicomnode → a real Orthanc, checked through its REST API."""

from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.conftest import pacs_destination
from tests.support.dcmtk import storescu
from tests.support.orthanc import Orthanc


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
