"""The product end to end: real CT and MR series in, derived series + metrics SR at Orthanc.

storescu → dicomnode (SRCNN and baseline, scale 1) → Orthanc; checked through Orthanc's REST
API, with dciodvfy/dcentvfy on every file the node wrote, and the SR read back with highdicom.
"""

import csv
import json
import subprocess
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset, dcmread

from dicomnode.config import Settings
from dicomnode.imaging.pixels import to_modality
from dicomnode.pipeline.enhancement import enhance_series
from dicomnode.pipeline.methods import methods_for
from dicomnode.pipeline.offline import file_sink, series_in
from tests.conftest import pacs_destination
from tests.support.cli import dicomnode
from tests.support.data import CT_CHEST, MR_T1, MR_T1C, dicom_files, pydicom_test_files
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.dcmtk import storescu
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.series import series_instance_uid, sop_instance_uid

CT_PATIENT = CT_CHEST  # one-slice series: two axial, one coronal reformat
SOURCE_FOLDERS = (CT_PATIENT, MR_T1, MR_T1C)  # + a 16-bit and a 12-bit MR series
SOURCES = dicom_files(*SOURCE_FOLDERS)
CT_IMAGES = len(dicom_files(CT_PATIENT))
SERIES = len({series_instance_uid(p) for p in SOURCES})
METHODS = ["srcnn", "baseline"]


def all_done(count: int):  # type: ignore[no-untyped-def]
    return lambda jobs: len(jobs) >= count and all(j["status"] == "done" for j in jobs)


def orthanc_datasets(orthanc: Orthanc) -> list[Dataset]:
    return [dcmread(BytesIO(orthanc.instance_file(i))) for i in orthanc.instance_ids()]


@dataclass
class Run:
    node: NodeProcess
    orthanc: Orthanc
    jobs: list[dict]
    details: dict[int, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def processed(tmp_path_factory, request):  # type: ignore[no-untyped-def]
    """One node run over a CT patient (one-slice series) and two MR series."""
    workdir = tmp_path_factory.mktemp("derived")
    orthanc = Orthanc(workdir / "orthanc").start()
    request.addfinalizer(orthanc.stop)
    node = NodeProcess(
        workdir / "node",
        [pacs_destination(orthanc)],
        {"enhance": {"methods": METHODS, "scale": 1}},
    ).start()
    request.addfinalizer(node.stop)
    for folder in SOURCE_FOLDERS:
        sent = storescu(node.port, dicom_files(folder))
        assert sent.returncode == 0, sent.stderr
    # each series: an originals job and a derived job
    jobs = node.wait_for_jobs(all_done(2 * SERIES), timeout=600)
    details = {
        j["id"]: node.cli("jobs", "show", str(j["id"]), "--json")
        for j in jobs
        if j["part"] == "derived"
    }
    return Run(node, orthanc, jobs, details)


def source_sops() -> set[str]:
    return {sop_instance_uid(p) for p in SOURCES}


def derived_series_uids(run: Run) -> set[str]:
    return {
        method["derived_series_uid"]
        for shown in run.details.values()
        for method in json.loads(shown.stdout)["details"]["methods"]
    }


def test_orthanc_holds_originals_one_derived_series_per_method_and_one_sr_each(processed) -> None:
    datasets = orthanc_datasets(processed.orthanc)
    sources, derived_series = source_sops(), derived_series_uids(processed)
    # (the CT reformats are DERIVED themselves: sort by what the node reported)
    originals = [ds for ds in datasets if str(ds.SOPInstanceUID) in sources]
    derived = [ds for ds in datasets if str(ds.SeriesInstanceUID) in derived_series]
    reports = [ds for ds in datasets if ds.Modality == "SR"]
    assert (len(SOURCES), SERIES) == (11, 5)
    assert len(originals) == len(SOURCES)
    assert len(derived) == len(METHODS) * len(SOURCES)
    assert len(reports) == len(METHODS) * SERIES
    assert len(derived_series) == len(METHODS) * SERIES
    assert len(datasets) == len(originals) + len(derived) + len(reports)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in originals}
    for ds in derived:
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        [source_ref] = ds.SourceImageSequence
        source = by_sop[str(source_ref.ReferencedSOPInstanceUID)]
        assert source_ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert ds.RelatedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert "vs source" in ds.ImageComments


def test_sr_numbers_equal_what_jobs_show_reports(processed) -> None:
    orthanc = processed.orthanc
    details = processed.details
    reports = [ds for ds in orthanc_datasets(orthanc) if ds.Modality == "SR"]
    reported: dict[str, dict[str, float]] = {}
    for ds in reports:
        sr = hd.sr.srread(BytesIO(_bytes(ds)))
        for group in sr.content.get_image_measurement_groups():
            derived_sop = group.source_images[0].referenced_sop_instance_uid
            reported[derived_sop] = {m.name.meaning: m.value for m in group.get_measurements()}
    expected = {}
    for shown in details.values():
        data = json.loads(shown.stdout)
        for method in data["details"]["methods"]:
            for image in method["per_image"]:
                expected[image["sop"]] = image
    assert set(reported) == set(expected)
    for sop, values in reported.items():
        assert values["Peak signal-to-noise ratio versus source"] == pytest.approx(
            expected[sop]["psnr_db"], abs=1e-4
        )
        assert values["Structural similarity versus source"] == pytest.approx(
            expected[sop]["ssim"], abs=1e-4
        )
        assert values["Self-check PSNR gain over bicubic"] == pytest.approx(
            expected[sop]["self_check_gain_db"], abs=1e-4
        )


def _bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_every_written_file_validates(processed) -> None:
    node = processed.node
    jobs = processed.jobs
    written = sorted((node.data_dir / "spool" / "outbox").rglob("*.dcm"))
    assert len(written) == len(METHODS) * (len(SOURCES) + SERIES)
    sources = {sop_instance_uid(p): p for p in SOURCES}
    source_errors = {line for p in sources.values() for line in dciodvfy_errors(p)}
    for path in written:
        ds = dcmread(path, stop_before_pixels=True)
        errors = dciodvfy_errors(path)
        if ds.Modality == "SR":  # it copies patient/study attributes (and their errors) only
            assert set(errors) <= source_errors, path
            continue
        source = sources[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert set(errors) <= set(dciodvfy_errors(source)), path  # adds none of its own
    # One job's outputs (both derived series and both reports) with their source, together.
    ct_job = min(j["id"] for j in jobs if j["instances"] == 1 and j["part"] == "derived")
    outputs = sorted((node.data_dir / "spool" / "outbox" / str(ct_job)).rglob("*.dcm"))
    assert len(outputs) == 2 * len(METHODS)
    source = {
        sources[str(dcmread(p).SourceImageSequence[0].ReferencedSOPInstanceUID)]
        for p in outputs
        if dcmread(p, stop_before_pixels=True).Modality != "SR"
    }
    result = subprocess.run(
        ["dcentvfy", *map(str, [*source, *outputs])], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_derived_ct_keeps_the_hounsfield_units(processed) -> None:
    orthanc = processed.orthanc
    datasets = orthanc_datasets(orthanc)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in datasets}
    checked = 0
    derived_series = derived_series_uids(processed)
    for ds in datasets:
        if ds.Modality != "CT" or str(ds.SeriesInstanceUID) not in derived_series:
            continue
        source = by_sop[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert (ds.WindowCenter, ds.WindowWidth) == (source.WindowCenter, source.WindowWidth)
        rows, cols = int(ds.Rows), int(ds.Columns)
        roi = (slice(rows * 3 // 8, rows * 5 // 8), slice(cols * 3 // 8, cols * 5 // 8))
        derived_hu = float(to_modality(ds).values[0][roi].mean())
        source_hu = float(to_modality(source).values[0][roi].mean())
        assert abs(derived_hu - source_hu) < 5.0
        checked += 1
    assert checked == len(METHODS) * CT_IMAGES


def test_resending_a_series_reprocesses_it_without_duplicates(processed) -> None:
    node = processed.node
    orthanc = processed.orthanc
    jobs = processed.jobs
    before = sorted(orthanc.instance_ids())
    first_file = dicom_files(CT_PATIENT)[0]
    sent = storescu(node.port, [first_file])
    assert sent.returncode == 0, sent.stderr
    node.wait_for_jobs(all_done(len(jobs) + 2), timeout=300)
    assert sorted(orthanc.instance_ids()) == before


def test_derived_pixels_are_not_the_source_pixels(processed) -> None:
    orthanc = processed.orthanc
    datasets = orthanc_datasets(orthanc)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in datasets}
    derived_series = derived_series_uids(processed)
    changed = [
        not np.array_equal(
            ds.pixel_array,
            by_sop[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)].pixel_array,
        )
        for ds in datasets
        if str(ds.SeriesInstanceUID) in derived_series
    ]
    assert len(changed) == len(METHODS) * len(SOURCES)
    assert sum(changed) >= len(changed) * 0.9


def test_enhance_command_writes_derived_files_sr_csv_and_figure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = dicomnode(
        "enhance",
        str(CT_PATIENT),
        str(out),
        "-m",
        "srcnn",
        "-m",
        "baseline",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = [dcmread(p, stop_before_pixels=True) for p in out.rglob("*.dcm")]
    images = [ds for ds in written if ds.Modality == "CT"]
    reports = [ds for ds in written if ds.Modality == "SR"]
    assert len(images) == 2 * CT_IMAGES and len(reports) == 2 * CT_IMAGES
    assert {str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) for ds in images} == {
        sop_instance_uid(p) for p in dicom_files(CT_PATIENT)
    }
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * CT_IMAGES and {r["method"] for r in rows} == {"srcnn", "baseline"}
    # a warn or a fail says why, as `jobs show --json` does (it read "QA warn" alone)
    assert "qa_reasons" in rows[0] and all(r["qa_reasons"] for r in rows if r["qa"] != "ok")
    assert (out / "comparison.png").stat().st_size > 10_000


def test_no_patient_name_or_id_reaches_the_log(processed) -> None:
    log = processed.node.log()
    assert "job done" in log or "job=" in log  # the log is the real one, with events in it
    for folder in SOURCE_FOLDERS:
        ds = dcmread(dicom_files(folder)[0], stop_before_pixels=True)
        for value in (str(ds.PatientName), str(ds.PatientID)):
            if len(value) >= 4:  # shorter IDs ("02") match timestamps, not patients
                assert value not in log, f"PHI {value!r} found in the node log"


def test_super_resolution_doubles_the_grid_and_validates(tmp_path: Path) -> None:
    out = tmp_path / "x2"
    source_path = sorted(CT_PATIENT.glob("axial-*.dcm"))[0]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / source_path.name).write_bytes(source_path.read_bytes())
    result = dicomnode(
        "enhance",
        str(folder),
        str(out),
        "-m",
        "srcnn",
        "--scale",
        "2",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    source = dcmread(source_path)
    [derived_path] = [p for p in out.rglob("*.dcm") if dcmread(p).Modality == "CT"]
    derived = dcmread(derived_path)
    assert (derived.Rows, derived.Columns) == (source.Rows * 2, source.Columns * 2)
    assert float(derived.PixelSpacing[0]) == pytest.approx(float(source.PixelSpacing[0]) / 2)
    assert derived.SourceImageSequence[0].SpatialLocationsPreserved == "NO"
    assert set(dciodvfy_errors(derived_path)) <= set(dciodvfy_errors(source_path))
    roi = (slice(200, 312), slice(200, 312))
    big = (slice(400, 624), slice(400, 624))
    source_hu = float(to_modality(source).values[0][roi].mean())
    assert abs(float(to_modality(derived).values[0][big].mean()) - source_hu) < 5.0


def test_a_big_endian_series_is_enhanced_as_its_little_endian_twin(tmp_path: Path) -> None:
    """Before, each big endian image was declined ("Explicit VR Big Endian (retired)"), though
    the node turns such files little endian to forward them; now the series is enhanced, and
    its derived images hold the same values as its little endian twin's."""
    [big] = pydicom_test_files("MR_small_bigendian.dcm")
    [little] = pydicom_test_files("MR_small.dcm")
    settings = Settings()
    settings = replace(
        settings, enhance=replace(settings.enhance, methods=["baseline"], self_check=False)
    )
    derived = {}
    for name, source in (("big", big), ("little", little)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "1.dcm").write_bytes(source.read_bytes())
        ((_, inputs),) = series_in(folder).items()
        sink = file_sink(tmp_path / f"{name}-out")
        output = enhance_series(1, inputs, settings, methods_for(settings), sink)
        assert output.outcome.declined == (), output.outcome.declined
        written = [dcmread(path) for path in (tmp_path / f"{name}-out").rglob("*.dcm")]
        [image] = [ds for ds in written if "PixelData" in ds]  # and the metrics SR
        derived[name] = image.pixel_array
    np.testing.assert_array_equal(derived["big"], derived["little"])


def test_a_ct_without_pixel_padding_value_is_enhanced_as_if_it_declared_one(
    tmp_path: Path,
) -> None:
    """Many CTs write -2048 or -3024 HU outside the reconstruction circle without declaring a
    PixelPaddingValue. Before, only a declared value was padding: the node enhanced the step at
    the circle as it was, which rang into the real pixels beside it (the derived CT went down to
    -3259 HU there). Now a CT's values below air are padding wherever they come from: the series
    is enhanced exactly as its twin that declares them, and they come back as they were."""
    [small] = pydicom_test_files("CT_small.dcm")
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, self_check=False))
    derived, outside = {}, None
    for name, declared in (("undeclared", None), ("declared", -1024)):
        ds = dcmread(small)
        rows, cols = np.mgrid[: ds.Rows, : ds.Columns]
        outside = (rows - ds.Rows / 2) ** 2 + (cols - ds.Columns / 2) ** 2 > (ds.Rows * 0.45) ** 2
        pixels = ds.pixel_array.copy()
        pixels[outside] = -1024  # stored; -2048 HU with the intercept of -1024
        ds.PixelData = pixels.tobytes()
        del ds.PixelPaddingValue
        if declared is not None:
            ds.add_new(0x00280120, "SS", declared)  # PixelPaddingValue
        folder = tmp_path / name
        folder.mkdir()
        ds.save_as(folder / "1.dcm")
        ((_, inputs),) = series_in(folder).items()
        output = enhance_series(
            1, inputs, settings, methods_for(settings), file_sink(tmp_path / f"{name}-out")
        )
        assert output.outcome.declined == (), output.outcome.declined
        written = [dcmread(path) for path in (tmp_path / f"{name}-out").rglob("*.dcm")]
        images = [image for image in written if "PixelData" in image]  # not the metrics SR
        assert images
        derived[name] = [image.pixel_array for image in images]
    for undeclared, declared_twin in zip(derived["undeclared"], derived["declared"], strict=True):
        np.testing.assert_array_equal(undeclared, declared_twin)
        assert (undeclared[outside] == -1024).all()  # the padding as it was, not rung


def test_a_series_the_node_derived_is_not_enhanced_again_when_it_comes_back(
    tmp_path: Path,
) -> None:
    """A PACS that routes every CT to the node, or a study sent back whole, brought the node's
    own derived series back: each time it made a derived series of it again ("BASELINE x1
    BASELINE x1"). Its images go on unchanged; the source series is enhanced as ever."""
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, methods=["baseline"]))
    methods = methods_for(settings)
    ((_, sources),) = series_in(_one_series(tmp_path)).items()
    first = enhance_series(1, sources, settings, methods, file_sink(tmp_path / "derived"))
    assert first.outcome.status == "done"
    derived_images = [
        items
        for items in series_in(tmp_path / "derived").values()
        if dcmread(items[0].path, stop_before_pixels=True).Modality == "CT"  # not the SR
    ]
    assert len(derived_images) == 1
    again = enhance_series(2, derived_images[0], settings, methods, file_sink(tmp_path / "again"))
    assert again.outcome.status == (
        "skipped: derived by dicomnode (a series it made, sent back): not enhanced again"
    )
    assert not again.by_method and not (tmp_path / "again").exists()
    assert again.unenhanced == {item.sop_instance_uid for item in derived_images[0]}  # sent on


def _one_series(tmp_path: Path) -> Path:
    """One CT series of one slice (the chest patient's first axial), in a folder of its own."""
    folder = tmp_path / "source"
    folder.mkdir()
    source = next(p for p in dicom_files(CT_PATIENT) if "axial" in p.name)
    (folder / source.name).write_bytes(source.read_bytes())
    return folder


def _metrics_report(
    tmp_path: Path, sources: list[Path], run: str, earlier: list[Dataset] | None = None
) -> Dataset:
    """The SR that enhancing `sources` (one series) with the baseline writes, after the
    `earlier` reports of the series were sent."""
    folder = tmp_path / f"{run}-in"
    folder.mkdir()
    for source in sources:
        (folder / source.name).write_bytes(source.read_bytes())
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, methods=["baseline"]))
    ((_, inputs),) = series_in(folder).items()
    sent: dict[str, list[str]] = {}
    for report in earlier or []:
        sent.setdefault(report.SeriesInstanceUID, []).append(report.SOPInstanceUID)
    output = enhance_series(
        1, inputs, settings, methods_for(settings), file_sink(tmp_path / run), earlier_reports=sent
    )
    assert output.outcome.status == "done"
    [path] = [p for p in (tmp_path / run).rglob("*.dcm") if dcmread(p).Modality == "SR"]
    report = dcmread(path)
    report.filename = str(path)
    return report


def test_a_series_that_grew_gets_a_metrics_report_of_another_uid(tmp_path: Path) -> None:
    """A modality that sends its images minutes apart makes a job for each part, and each
    wrote its report under one UID: a PACS that keeps the first copy of a UID (Orthanc's
    default) kept the report of the first image beside a derived series of them all. Made
    again from the same images, the report keeps its UID (a retry replaces it)."""
    first, second = sorted(dicom_files(MR_T1))[:2]
    alone = _metrics_report(tmp_path, [first], "alone")
    grown = _metrics_report(tmp_path, [first, second], "grown", earlier=[alone])
    again = _metrics_report(tmp_path, [first, second], "again", earlier=[alone, grown])
    assert grown.SOPInstanceUID != alone.SOPInstanceUID
    assert grown.SeriesInstanceUID == alone.SeriesInstanceUID  # the same report series
    assert again.SOPInstanceUID == grown.SOPInstanceUID
    # the grown report names the one it replaces (the PACS keeps both); a retry not itself
    assert "PredecessorDocumentsSequence" not in alone
    for report in (grown, again):
        [study] = report.PredecessorDocumentsSequence
        assert study.StudyInstanceUID == alone.StudyInstanceUID
        [series] = study.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == alone.SeriesInstanceUID
        [item] = series.ReferencedSOPSequence
        assert (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) == (
            alone.SOPClassUID,
            alone.SOPInstanceUID,
        )
    errors = dciodvfy_errors(Path(grown.filename))
    assert errors <= dciodvfy_errors(Path(alone.filename)), errors  # the sequence adds none

    def images(report: Dataset) -> int:
        return len(hd.sr.ComprehensiveSR.from_dataset(report).get_evidence())

    assert (images(alone), images(grown)) == (2, 4)  # each derived image and its source
