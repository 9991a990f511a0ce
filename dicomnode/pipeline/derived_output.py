"""One method's derived series as DICOM: the derived images and their metrics report.

Each image is derived and encoded on its own (`derive_image`), as soon as its output and its
scores exist, so the job can do it while the method works on the next images; then the report
is built, and only then is anything handed to the sink, so a series whose report cannot be
built leaves no half-written output behind. An image whose header the standard does not let us
derive from (`ImageDeclined`: see `dicom.conformance`) is left out with its reason: its source
still goes to the PACS as it came.
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


@dataclass(frozen=True)
class EncodedInstance:
    """One output as the bytes of its file, with the UIDs that name and describe it."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    data: bytes

    def spooled(self, path: Path) -> SpooledInstance:
        """The record of this instance once stored at `path`."""
        return SpooledInstance(
            self.sop_instance_uid, self.sop_class_uid, self.transfer_syntax_uid, path
        )


Sink = Callable[[EncodedInstance], SpooledInstance]


def encoded(ds: Dataset) -> EncodedInstance:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return EncodedInstance(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.file_meta.TransferSyntaxUID),
        buffer.getvalue(),
    )


def outbox_sink(spool: Spool, job_id: int) -> Sink:
    """Where a job's outputs go: the spool's outbox, durably."""

    def write(instance: EncodedInstance) -> SpooledInstance:
        path = spool.write_outbox(
            job_id, instance.series_instance_uid, instance.sop_instance_uid, instance.data
        )
        return instance.spooled(path)

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
        processed_at=datetime.now().astimezone(),
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
class DerivedImage:
    """One derived image, encoded, and what its series' report says of it (the header only:
    the pixels are in the encoded file)."""

    file: EncodedInstance
    measures: ImageMeasures


def derive_image(
    source: SourceImage,
    output: np.ndarray,
    image: ImageOutcome,
    method: Method,
    derivation: Derivation,
) -> DerivedImage | DeclinedImage:
    """The derived image of one source, encoded; or why the standard does not let us derive
    it. Safe to run beside the enhancement of other images (it reads only its own source)."""
    padding = _upsampled(source.image.padding, method.scale)
    padding_stored = _upsampled(source.image.stored, method.scale)
    stored = to_stored(output, source.image.domain, padding, padding_stored)
    try:
        derived = derived_instance(
            source.dataset, stored, derivation, comments=image_comment(method, image)
        )
    except ImageDeclined as exc:
        return DeclinedImage(source.sop, f"{exc} (method {method.name})")
    file = encoded(derived)
    del derived.PixelData  # in `file`; the report needs only the header
    return DerivedImage(file, ImageMeasures(derived, source.dataset, image))


@dataclass(frozen=True)
class WrittenSeries:
    """What reached the sink: the derived images (in order), their report, and what they are."""

    images: list[SpooledInstance]
    report: SpooledInstance
    report_series_uid: str
    measured: tuple[ImageOutcome, ...]  # the images that were derived


def write_derived_series(
    derived: Sequence[DerivedImage | DeclinedImage],
    method: Method,
    derivation: Derivation,
    settings: Settings,
    sink: Sink,
) -> tuple[WrittenSeries | None, list[DeclinedImage]]:
    """Build the report of the derived images (`derive_image`, in series order), then hand
    images and report to `sink`; None when no image could be derived (or the report could not
    be built), with the reason for each left out."""
    built = [image for image in derived if isinstance(image, DerivedImage)]
    declined = [image for image in derived if isinstance(image, DeclinedImage)]
    if not built:
        return None, declined
    root = derivation.uid_root
    report_series = derived_uid(root, "report-series", derivation.series_uid)
    try:
        report = metrics_report(
            [image.measures for image in built],
            series_uid=report_series,
            series_number=derivation.series_number + settings.enhance.report_series_offset,
            sop_uid=derived_uid(root, "report", derivation.series_uid, method.version),
            description=f"Metrics {derivation.series_description}".strip(),
        )
    except DicomNodeError as exc:  # without its report a derived series does not go out
        why = f"metrics report not built: {exc} (method {method.name})"
        unreported = [
            DeclinedImage(sop, f"sop={sop}: {why}")
            for sop in (image.measures.outcome.source_sop for image in built)
        ]
        return None, declined + unreported
    files = [sink(image.file) for image in built]
    measured = tuple(image.measures.outcome for image in built)
    return WrittenSeries(files, sink(encoded(report)), report_series, measured), declined
