"""The router comes first: the originals reach the PACS at once, whatever the enhancement does.

A series gets an originals job and a derived job; the originals job is claimed by the node's
router, which never waits for an enhancement. Checked against a real Orthanc with a real
de-identified CT (the GE head in tests/data), series stripped of type-2 attributes, header
variants, and methods that fail or take long (`tests/support/injected_methods.py`, loaded with
`enhance.plugins`).
"""

import json
import shutil
import time
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from tests.conftest import pacs_destination
from tests.support.cli import dicomnode
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.dcmtk import storescu
from tests.support.node import NodeProcess, part_of
from tests.support.orthanc import Orthanc
from tests.support.series import write_ct_series
from tests.support.silent_peers import silent_listener

GE_HEAD = Path(__file__).resolve().parents[1] / "data" / "ct-head-ge"
INJECTED = "tests.support.injected_methods"
# Type-2 attributes that de-identification tools commonly drop (issue 12)
DROPPED_BY_DEIDENTIFICATION = (
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "SeriesNumber",
    "InstanceNumber",
)


def rewrite(paths: list[Path], change) -> list[Path]:  # type: ignore[no-untyped-def]
    for path in paths:
        ds = dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)
    return paths


def drop(*keywords: str):  # type: ignore[no-untyped-def]
    def change(ds: Dataset) -> None:
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)

    return change


def assert_arrived_unchanged(orthanc: Orthanc, paths: list[Path]) -> None:
    """Every file is at the PACS, element for element and byte for byte in its pixel data."""
    received = orthanc.datasets()
    for path in paths:
        original = dcmread(path)
        arrived = received[str(original.SOPInstanceUID)]
        assert [(e.tag, e.VR, e.value) for e in arrived] == [
            (e.tag, e.VR, e.value) for e in original
        ], path


def assert_written_files_validate(node: NodeProcess, sources: list[Path]) -> int:
    """dciodvfy finds no error in what the node wrote beyond those of its sources."""
    source_errors = {line for path in sources for line in dciodvfy_errors(path)}
    written = sorted((node.data_dir / "spool" / "outbox").rglob("*.dcm"))
    for path in written:
        assert dciodvfy_errors(path) <= source_errors, path
    return len(written)


def all_done(jobs: list[dict]) -> bool:
    return bool(jobs) and all(job["status"] == "done" for job in jobs)


def test_an_anonymised_real_ct_and_a_series_without_type2_attributes_arrive_complete(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    head = [shutil.copy(p, tmp_path / p.name) for p in sorted(GE_HEAD.iterdir())]
    head = [Path(p) for p in head]
    stripped = rewrite(
        write_ct_series(tmp_path / "stripped", 4), drop(*DROPPED_BY_DEIDENTIFICATION)
    )
    node = node_factory([pacs_destination(orthanc)], enhance={"methods": ["srcnn"]}).start()
    for series in (head, stripped):
        sent = storescu(node.port, series)
        assert sent.returncode == 0, sent.stderr

    jobs = node.wait_for_jobs(lambda js: len(js) == 4 and all_done(js), timeout=300)
    assert sorted(job["part"] for job in jobs) == ["derived", "derived", "originals", "originals"]
    for job in jobs:
        if job["part"] == "derived":
            assert job["details"]["enhancement"] == "done", job
            assert job["details"]["skipped"] == [], job
    sources = head + stripped
    assert_arrived_unchanged(orthanc, sources)
    # originals, one derived image each, and one metrics SR per series
    assert len(orthanc.instance_ids()) == 2 * len(sources) + 2
    assert assert_written_files_validate(node, sources) == len(sources) + 2
    assert "Traceback" not in node.log()


def test_a_failing_enhancement_never_fails_the_originals(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["failing"], "plugins": [INJECTED]},
        retry={"max_attempts": 2},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    jobs = node.wait_for_parts(derived="dead", timeout=120)
    derived, originals = part_of(jobs, "derived"), part_of(jobs, "originals")
    assert "injected failure" in derived["error"] and derived["attempts"] == 2
    assert originals["deliveries"][0]["sent"] == len(ct_series) and originals["error"] is None
    # No attempt of the originals job ever saw the enhancement's failure (a loaded machine may
    # still retry it for reasons of its own, e.g. a PACS slow to answer).
    history = json.loads(node.cli("jobs", "show", str(originals["id"]), "--json").stdout)["history"]
    assert history and not any("injected" in (event["detail"] or "") for event in history)
    assert_arrived_unchanged(orthanc, ct_series)
    assert len(orthanc.instance_ids()) == len(ct_series)
    shown = node.cli("jobs", "show", str(derived["id"])).stdout
    assert f"{originals['id']} (originals: done)" in shown


def test_the_originals_are_at_the_pacs_before_a_slow_enhancement_ends(
    node_factory, orthanc: Orthanc, ct_series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICOMNODE_TEST_SLOW_SECONDS", "15")
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["slow"], "plugins": [INJECTED], "self_check": False},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    deadline = time.monotonic() + 60
    while len(orthanc.instance_ids()) < len(ct_series) and time.monotonic() < deadline:
        time.sleep(0.2)
    jobs = node.jobs()
    assert part_of(jobs, "originals")["status"] == "done"
    assert part_of(jobs, "derived")["status"] == "processing"  # still enhancing
    assert_arrived_unchanged(orthanc, ct_series)

    node.wait_for_jobs(all_done, timeout=90)
    assert len(orthanc.instance_ids()) == 2 * len(ct_series) + 1


def test_the_enhancement_waits_for_the_originals_but_not_for_a_pacs_that_never_answers(
    node_factory, ct_series: list[Path]
) -> None:
    """A derived job gives the series' originals a head start (worker.originals_head_start_seconds:
    the cores are theirs while they are sent), bounded: here the PACS takes the connection and
    never answers, so the originals stay in flight and the enhancement starts after 8 s. The
    series is read meanwhile, its self-check prepared and its sources measured for QA: the load
    and the measures are logged before the wait ends (under a second on an idle machine; 4 s
    was not always enough on a loaded one)."""
    with silent_listener() as port:
        node = node_factory(
            [{"name": "pacs", "ae_title": "SILENT", "host": "127.0.0.1", "port": port}],
            enhance={"methods": ["baseline"]},
            worker={"originals_head_start_seconds": 8},
        ).start()
        assert storescu(node.port, ct_series).returncode == 0
        line = node.wait_for_log("job waited for the originals", timeout=60)
        assert "seconds=8." in line and "(worker.originals_head_start_seconds)" in line
        loaded = node.wait_for_log("series loaded job=")
        assert f"images={len(ct_series)} declined=0" in loaded
        measured = node.wait_for_log("sources measured ahead job=")
        assert f"images={len(ct_series)}" in measured
        log = node.log()
        assert log.index(loaded) < log.index(measured) < log.index(line)  # during the head start
        jobs = node.wait_for_jobs(
            lambda jobs: part_of(jobs, "derived")["status"] in ("forwarding", "failed"), timeout=60
        )
        assert part_of(jobs, "originals")["status"] != "done"  # never answered, still tried


def variants(folder: Path) -> dict[str, list[Path]]:
    """Header variants of a generated CT series, each its own series (new UIDs)."""

    def invalid_values(ds: Dataset) -> None:
        ds.PatientBirthDate = "1970-01-01"  # ISO, not DA
        ds.PatientSex = "male"  # not M, F or O
        ds.StudyTime = "25:61"

    def blanked(ds: Dataset) -> None:
        for keyword in (*DROPPED_BY_DEIDENTIFICATION, "PatientName", "PatientID"):
            setattr(ds, keyword, "")

    def gantry_tilt(ds: Dataset) -> None:
        ds.GantryDetectorTilt = 18.5
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.948324, -0.317305]

    changes = {
        "type2-removed": drop(*DROPPED_BY_DEIDENTIFICATION, "PatientName", "PatientID"),
        "type2-blank": blanked,
        "type3-removed": drop(
            "InstitutionName",
            "StudyDescription",
            "SeriesDescription",
            "BodyPartExamined",
            "ManufacturerModelName",
            "ImageType",
            "WindowCenter",
            "WindowWidth",
        ),
        "invalid-values": invalid_values,
        "no-geometry": drop("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"),
        "gantry-tilt": gantry_tilt,
    }
    return {
        name: rewrite(write_ct_series(folder / name, 2, seed=index), change)
        for index, (name, change) in enumerate(changes.items())
    }


@pytest.mark.slow
def test_header_variants_through_a_running_node(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    series = variants(tmp_path / "variants")
    node = node_factory(
        [pacs_destination(orthanc)], enhance={"methods": ["baseline"], "self_check": False}
    ).start()
    for paths in series.values():
        assert storescu(node.port, paths).returncode == 0, paths

    jobs = node.wait_for_jobs(
        lambda js: len(js) == 2 * len(series) and all(j["status"] in ("done", "dead") for j in js),
        timeout=300,
    )
    assert all(job["status"] == "done" for job in jobs), jobs
    sources = [path for paths in series.values() for path in paths]
    assert_arrived_unchanged(orthanc, sources)
    derived = sum(
        len(job["details"]["methods"][0]["per_image"]) if job["details"]["methods"] else 0
        for job in jobs
        if job["part"] == "derived"
    )
    assert derived == len(sources)  # every variant could be derived at scale 1
    assert assert_written_files_validate(node, sources) == derived + len(series)
    assert "Traceback" not in node.log()
    assert "1970-01-01" not in node.log()  # a non-conformant value is data, not a message


def test_enhance_reports_a_series_it_cannot_process_goes_on_and_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    good = write_ct_series(folder / "good", 2)
    # A SOP class no IOD describes: nothing derived can be built from it (declined per image).
    odd = rewrite(write_ct_series(folder / "odd", 2, seed=1), _private_sop_class)
    result = dicomnode("enhance", str(folder), str(tmp_path / "out"), "-m", "baseline")

    assert result.returncode == 1, result.stderr
    odd_series = str(dcmread(odd[0]).SeriesInstanceUID)
    failure = [
        line for line in result.stderr.splitlines() if line.startswith(f"series {odd_series}")
    ]
    assert failure and "no derived image could be built" in failure[0]
    assert "1 of 2 series could not be enhanced" in result.stderr
    assert "Traceback" not in result.stderr
    good_series = str(dcmread(good[0]).SeriesInstanceUID)
    assert good_series in result.stdout  # the other series was enhanced and described
    with (tmp_path / "out" / "metrics.csv").open() as handle:
        assert len(handle.readlines()) == 1 + len(good)


def test_enhance_exits_1_when_no_series_has_an_image_it_can_enhance(tmp_path: Path) -> None:
    # Every image declined (HighBit does not end the stored bits): the series is skipped.
    rewrite(write_ct_series(tmp_path / "in", 2), _bad_high_bit)
    result = dicomnode("enhance", str(tmp_path / "in"), str(tmp_path / "out"), "-m", "baseline")
    assert result.returncode == 1, result.stderr
    assert "skipped: no image in the series can be enhanced" in result.stderr
    assert "none of the 1 series has an image that could be enhanced" in result.stderr


def _bad_high_bit(ds: Dataset) -> None:
    ds.HighBit = 3


def _private_sop_class(ds: Dataset) -> None:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.10.999.1"


def test_a_method_that_makes_the_series_worse_is_held_and_the_originals_go(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["harmful"], "plugins": [INJECTED], "qa_action": "hold"},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    jobs = node.wait_for_parts(derived="held", timeout=120)
    derived = part_of(jobs, "derived")
    assert derived["error"].startswith("harmful: ") and "self-check mean gain" in derived["error"]
    assert derived["details"]["methods"][0]["self_check_gain_mean_db"] < 0
    assert_arrived_unchanged(orthanc, ct_series)
    assert len(orthanc.instance_ids()) == len(ct_series)  # nothing derived went out
    assert node.log().count("derived series not trusted") == 1  # once per series

    node.cli("jobs", "release", str(derived["id"]))
    node.wait_for_jobs(lambda js: part_of(js, "derived")["status"] == "done", timeout=120)
    assert len(orthanc.instance_ids()) == 2 * len(ct_series) + 1
