"""One method's derived series as DICOM: the derived images and their metrics report.

Everything is built before anything is written, so a series whose report cannot be built leaves
no half-written output behind. An image whose header the standard does not let us derive from
(`ImageDeclined`: see `dicom.conformance`) is left out with its reason: its source still goes to
the PACS as it came.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import Dataset

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.dicom.derive import Derivation, derived_instance, derived_series_uid, derived_uid
from dicomnode.dicom.report import ImageMeasures, metrics_report
from dicomnode.errors import DicomNodeError, ImageDeclined
from dicomnode.imaging.enhance import Method
from dicomnode.imaging.outcome import DeclinedImage, ImageOutcome
from dicomnode.imaging.pixels import to_stored
from dicomnode.pipeline.sources import SourceImage, integer_of
from dicomnode.registry import method_spec
from dicomnode.spool import Spool

Sink = Callable[[Dataset], SpooledInstance]


def encoded(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def spooled(ds: Dataset, path: Path) -> SpooledInstance:
    return SpooledInstance(
        str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), path
    )


def outbox_sink(spool: Spool, job_id: int) -> Sink:
    """Where a job's outputs go: the spool's outbox, durably."""

    def write(ds: Dataset) -> SpooledInstance:
        data = encoded(ds)
        return spooled(
            ds, spool.write_outbox(job_id, ds.SeriesInstanceUID, ds.SOPInstanceUID, data)
        )

    return write


def derivation_for(images: list[SourceImage], method: Method, settings: Settings) -> Derivation:
    """What the derived series of `method` is: its UIDs, number, description and codes."""
    enhance = settings.enhance
    spec = method_spec(method.name)
    first = images[0].dataset
    root = enhance.uid_root or None
    description = f"{method.name.upper()} x{method.scale} {first.get('SeriesDescription', '')}"
    return Derivation(
        method=method.name,
        version=method.version,
        scale=method.scale,
        codes=tuple(spec.codes(method.scale)),
        description=(
            f"dicomnode {method.name} {method.version}, scale {method.scale}; "
            "intensities in the source's rescale; metrics vs source in ImageComments"
        ),
        series_uid=derived_series_uid(str(first.SeriesInstanceUID), method.version, root),
        series_number=integer_of(first, "SeriesNumber") + spec.series_offset(enhance),
        series_description=description.strip(),
        uid_root=root,
        processed_at=datetime.now(),
    )


def image_comment(method: Method, image: ImageOutcome) -> str:
    """The derived image's ImageComments: its metrics in one line a viewer shows."""
    text = (
        f"{method.name.upper()} x{method.scale} {method.version}: "
        f"PSNR {image.fidelity.psnr_db:.2f} dB, "
        f"SSIM {image.fidelity.ssim:.4f} vs source"
    )
    if image.self_check_gain_db is not None:
        text += f"; self-check {image.self_check_gain_db:+.2f} dB vs bicubic"
    return text + f"; QA {image.qa.verdict}"


def _upsampled(mask: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(mask, scale, axis=-2), scale, axis=-1) if scale > 1 else mask


@dataclass(frozen=True)
class WrittenSeries:
    """What reached the sink: the derived images (in order), their report, and what they are."""

    images: list[SpooledInstance]
    report: SpooledInstance
    report_series_uid: str
    measured: tuple[ImageOutcome, ...]  # the images that were derived


def write_derived_series(
    images: Sequence[SourceImage],
    outputs: Sequence[np.ndarray],
    measured: Sequence[ImageOutcome],
    method: Method,
    derivation: Derivation,
    settings: Settings,
    sink: Sink,
) -> tuple[WrittenSeries | None, list[DeclinedImage]]:
    """Build every derived image and the report, then hand them to `sink`; None when no image
    could be derived (or the report could not be built), with the reason for each left out."""
    built: list[ImageMeasures] = []
    declined: list[DeclinedImage] = []
    for source, output, image in zip(images, outputs, measured, strict=True):
        padding = _upsampled(source.image.padding, method.scale)
        padding_stored = _upsampled(source.image.stored, method.scale)
        stored = to_stored(output, source.image.domain, padding, padding_stored)
        try:
            derived = derived_instance(
                source.dataset,
                stored,
                derivation,
                comments=image_comment(method, image),
            )
        except ImageDeclined as exc:
            declined.append(DeclinedImage(source.sop, f"{exc} (method {method.name})"))
            continue
        built.append(ImageMeasures(derived, source.dataset, image))
    if not built:
        return None, declined
    root = derivation.uid_root
    report_series = derived_uid(root, "report-series", derivation.series_uid)
    try:
        report = metrics_report(
            built,
            series_uid=report_series,
            series_number=derivation.series_number + settings.enhance.report_series_offset,
            sop_uid=derived_uid(root, "report", derivation.series_uid, method.version),
            description=f"Metrics {derivation.series_description}".strip(),
        )
    except DicomNodeError as exc:  # without its report a derived series does not go out
        why = f"metrics report not built: {exc} (method {method.name})"
        unreported = [
            DeclinedImage(m.outcome.source_sop, f"sop={m.outcome.source_sop}: {why}") for m in built
        ]
        return None, declined + unreported
    files = [sink(m.derived) for m in built]
    written = WrittenSeries(files, sink(report), report_series, tuple(m.outcome for m in built))
    return written, declined
