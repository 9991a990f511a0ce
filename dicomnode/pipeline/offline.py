"""Offline use of the job pipeline: series from a folder, outputs to a folder, a figure."""

import csv
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.db import SpooledInstance
from dicomnode.imaging.outcome import MethodOutcome, self_check_reference
from dicomnode.imaging.pixels import to_modality
from dicomnode.pipeline.derived_output import EncodedInstance, Sink
from dicomnode.spool import validate_uid

log = logging.getLogger(__name__)


def series_in(folder: Path) -> dict[str, list[SpooledInstance]]:
    """Every DICOM file under `folder`, grouped by SeriesInstanceUID."""
    found: dict[str, list[SpooledInstance]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue
        if "SOPInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
            continue
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
        found[str(ds.SeriesInstanceUID)].append(
            SpooledInstance(str(ds.SOPInstanceUID), str(ds.SOPClassUID), syntax, path)
        )
    return dict(found)


class _Folder:
    def __init__(self, out_dir: Path) -> None:
        self._out_dir = out_dir

    def _path(self, instance: EncodedInstance) -> Path:
        series = self._out_dir / validate_uid(instance.series_instance_uid, "SeriesInstanceUID")
        return series / f"{validate_uid(instance.sop_instance_uid, 'SOPInstanceUID')}.dcm"

    def __call__(self, instance: EncodedInstance) -> SpooledInstance:
        path = self._path(instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            partial.write_bytes(instance.data)
            os.replace(partial, path)  # never a half-written .dcm, even when interrupted
        finally:
            partial.unlink(missing_ok=True)
        return instance.spooled(path)

    def holds(self, instance: EncodedInstance) -> bool:
        return self._path(instance).exists()


def file_sink(out_dir: Path) -> Sink:
    """Write each output to OUT_DIR/<SeriesInstanceUID>/<SOPInstanceUID>.dcm."""
    return _Folder(out_dir)


def comparison_figure(
    inputs: list[SpooledInstance], methods: Sequence[MethodOutcome], out_dir: Path, path: Path
) -> None:
    """The middle image of the series next to each method's output and the differences."""
    from dicomnode.training.figures import plot_enhanced

    by_sop = {i.sop_instance_uid: i.path for i in inputs}
    middle = methods[0].images[len(methods[0].images) // 2].source_sop
    source = to_modality(dcmread(by_sop[middle])).values[0]
    outputs = {}
    for method in methods:
        derived = out_dir / method.derived_series_uid / f"{method.image_for(middle).sop}.dcm"
        outputs[f"{method.method} x{method.scale}"] = to_modality(dcmread(derived)).values[0]
    plot_enhanced(source, outputs, path, "metrics in each image's ImageComments and metrics.csv")


def describe(series_uid: str, method: MethodOutcome, out_dir: Path) -> str:
    """One line per method and series for `dicomnode enhance`."""
    return (
        f"series {series_uid}: {method.method} x{method.scale}: {len(method.images)} images -> "
        f"{out_dir / method.derived_series_uid}; PSNR {method.psnr_mean_db} dB, "
        f"SSIM {method.ssim_mean} vs source; self-check {method.self_check_text} vs "
        f"{self_check_reference(method.scale)}; "
        f"QA {method.qa}; {method.device}"
    )


CSV_FIELDS = ("source_sop", "sop", "psnr_db", "ssim", "self_check_gain_db", "qa", "qa_reasons")
METRICS_FIELDS = ["series", "method", "version", *CSV_FIELDS]


def metrics_rows(series_uid: str, methods: Sequence[MethodOutcome]) -> list[dict[str, Any]]:
    """metrics.csv: one row per image and method, the same numbers as the job details."""
    rows = []
    for method in methods:
        for image in method.images:
            record = image.as_dict()
            fields = {key: record[key] for key in CSV_FIELDS}
            fields["qa_reasons"] = "; ".join(record["qa_reasons"])  # why a warn or a fail
            rows.append(
                {"series": series_uid, "method": method.method, "version": method.version, **fields}
            )
    return rows


def merge_metrics_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Put `rows` into metrics.csv, keeping an earlier run's rows for the series and method
    versions this run did not make: their derived series stay in the folder, so must their
    numbers (a run of another method, or one that failed, replaced them all). A file that is
    no such table is kept beside it as `metrics.csv.previous`. Nothing is written when
    nothing was made."""
    if not rows:
        return
    kept: list[dict[str, Any]] = []
    if path.exists():
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            ours = reader.fieldnames == METRICS_FIELDS
            if ours:  # a version is a derived series of its own (another scale, model)
                made = {(row["series"], row["method"], row["version"]) for row in rows}
                kept = [
                    row
                    for row in reader
                    if (row["series"], row["method"], row["version"]) not in made
                ]
        if not ours:
            previous = path.with_name(f"{path.name}.previous")
            path.replace(previous)
            log.warning("%s is not a metrics table of ours: kept as %s", path, previous)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRICS_FIELDS)
            writer.writeheader()
            writer.writerows([*kept, *rows])
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
