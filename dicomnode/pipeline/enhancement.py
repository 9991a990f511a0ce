"""One job's enhancement: load the series, run each method, measure, write derived series + SR.

For every configured method the job gets one derived series (same study, new deterministic UIDs)
and one metrics report, written to the spool's outbox before anything is forwarded. Each method
runs enhance → measure → write → summarise. Images that cannot be enhanced (colour, float,
undecodable, ...) are listed with their reason and still go out unchanged with the originals.
What happened is returned as a `SeriesOutcome` record (device, model, timings, metrics per image
and per method); its `as_dict()` is the job's `details`.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.dicom.derive import (
    Derivation,
    derived_instance,
    derived_instance_uid,
    derived_series_uid,
    derived_uid,
)
from dicomnode.dicom.report import ImageMeasures, metrics_report
from dicomnode.errors import ImageDeclined
from dicomnode.imaging.degrade import Degradation, resample
from dicomnode.imaging.enhance import Method, enhance_stack
from dicomnode.imaging.metrics import compare, self_check
from dicomnode.imaging.normalize import CT_HU_RANGE
from dicomnode.imaging.outcome import (
    DONE,
    DeclinedImage,
    ImageOutcome,
    MethodOutcome,
    SeriesOutcome,
    StageTimings,
    reported,
    reported_fidelity,
)
from dicomnode.imaging.pixels import ModalityImage, to_modality, to_stored
from dicomnode.imaging.qa import assess
from dicomnode.pipeline.methods import qa_thresholds
from dicomnode.registry import method_spec
from dicomnode.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class SourceImage:
    dataset: Dataset
    image: ModalityImage

    @property
    def sop(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def modality(self) -> str:
        return str(self.dataset.get("Modality", "")).upper()


@dataclass(frozen=True)
class SeriesOutput:
    """What the job forwards after the originals, and the record of what was done."""

    series: list[list[SpooledInstance]]
    outcome: SeriesOutcome
    # Source instances no derived image stands for (undecodable, or the series not enhanced).
    unenhanced: set[str] = field(default_factory=set)


def _load(inputs: list[SpooledInstance]) -> tuple[list[SourceImage], tuple[DeclinedImage, ...]]:
    images, declined = [], []
    for item in inputs:
        try:
            dataset = dcmread(item.path)
            images.append(SourceImage(dataset, to_modality(dataset)))
        except ImageDeclined as exc:
            declined.append(DeclinedImage(item.sop_instance_uid, str(exc)))
        except (InvalidDicomError, OSError, ValueError) as exc:
            reason = f"sop={item.sop_instance_uid}: cannot read {item.path}: {exc}"
            declined.append(DeclinedImage(item.sop_instance_uid, reason))
    images.sort(key=lambda s: (int(s.dataset.get("InstanceNumber", 0) or 0), s.sop))
    return images, tuple(declined)


def _enhance_all(images: list[SourceImage], method: Method) -> list[np.ndarray]:
    """Outputs per image; images of one frame shape run as one stack (SRCNN batches them).

    The series' modality (its first image's) decides the working range for all of them."""
    modality = images[0].modality or "OT"
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, source in enumerate(images):
        by_shape[source.image.values.shape[1:]].append(index)
    outputs: list[np.ndarray] = [np.empty(0)] * len(images)
    for indices in by_shape.values():
        stack = np.concatenate([images[i].image.values for i in indices])
        padding = np.concatenate([images[i].image.padding for i in indices])
        result = enhance_stack(stack, modality, method, padding=padding).values
        start = 0
        for i in indices:
            frames = len(images[i].image.values)
            outputs[i] = result[start : start + frames]
            start += frames
    return outputs


def _upsampled(mask: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(mask, scale, axis=-2), scale, axis=-1) if scale > 1 else mask


def _on_source_grid(output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return output if output.shape == shape else resample(output, shape)


def _measure(
    source: SourceImage, output: np.ndarray, method: Method, settings: Settings, sop: str
) -> ImageOutcome:
    """Fidelity, self-check and QA for one image (middle frame of a multi-frame image)."""
    frame = len(output) // 2
    reference = source.image.values[frame]
    padding = source.image.padding[frame]
    if source.modality == "CT":  # outside the reconstruction circle: not scored (as `evaluate`)
        padding = padding | (reference < CT_HU_RANGE[0])
    result = _on_source_grid(output[frame], reference.shape)
    domain = source.image.domain
    limits = sorted(
        (
            domain.stored_min * domain.slope + domain.intercept,
            domain.stored_max * domain.slope + domain.intercept,
        )
    )
    verdict = assess(
        reference,
        result,
        limits=(limits[0], limits[1]),
        padding=padding,
        thresholds=qa_thresholds(settings.qa),
    )
    gain = None
    if settings.enhance.self_check:
        check = self_check(
            reference,
            lambda low: enhance_stack(low[None], source.modality, method).values[0],
            Degradation(scale=method.scale),
            padding=padding,
        )
        gain = reported(check.gain_db)
    return ImageOutcome(
        source_sop=source.sop,
        sop=sop,
        fidelity=reported_fidelity(compare(reference, result, padding=padding)),
        self_check_gain_db=gain,
        qa=verdict,
    )


def _comment(method: Method, image: ImageOutcome) -> str:
    text = (
        f"{method.name.upper()} x{method.scale} {method.version}: "
        f"PSNR {image.fidelity.psnr_db:.2f} dB, "
        f"SSIM {image.fidelity.ssim:.4f} vs source"
    )
    if image.self_check_gain_db is not None:
        text += f"; self-check {image.self_check_gain_db:+.2f} dB vs bicubic"
    return text + f"; QA {image.qa.verdict}"


def _series_number(source: Dataset, offset: int) -> int:
    return int(source.get("SeriesNumber", 0) or 0) + offset


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


class _Stopwatch:
    """Seconds per stage, for the job's timings."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def _derivation(images: list[SourceImage], method: Method, settings: Settings) -> Derivation:
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
        series_number=_series_number(first, spec.series_offset(enhance)),
        series_description=description.strip(),
        uid_root=root,
        processed_at=datetime.now(),
    )


@dataclass(frozen=True)
class _Written:
    images: list[SpooledInstance]
    report: SpooledInstance
    report_series_uid: str


def _write(
    images: list[SourceImage],
    outputs: list[np.ndarray],
    measured: list[ImageOutcome],
    method: Method,
    derivation: Derivation,
    settings: Settings,
    sink: Sink,
) -> _Written:
    """The derived images, then the metrics report that references them, each to `sink`."""
    sources = [(str(s.dataset.SOPClassUID), s.sop) for s in images]
    files, reported_images = [], []
    for source, output, image in zip(images, outputs, measured, strict=True):
        padding = _upsampled(source.image.padding, method.scale)
        padding_stored = _upsampled(source.image.stored, method.scale)
        stored = to_stored(output, source.image.domain, padding, padding_stored)
        derived = derived_instance(
            source.dataset,
            stored,
            derivation,
            series_sources=sources,
            comments=_comment(method, image),
        )
        files.append(sink(derived))
        reported_images.append(ImageMeasures(derived, source.dataset, image))
    root = derivation.uid_root
    report_series = derived_uid(root, "report-series", derivation.series_uid)
    report = metrics_report(
        reported_images,
        series_uid=report_series,
        series_number=derivation.series_number + settings.enhance.report_series_offset,
        sop_uid=derived_uid(root, "report", derivation.series_uid, method.version),
        description=f"Metrics {derivation.series_description}".strip(),
    )
    return _Written(files, sink(report), report_series)


def _run_method(
    images: list[SourceImage], method: Method, settings: Settings, sink: Sink
) -> tuple[list[list[SpooledInstance]], MethodOutcome]:
    """enhance → measure → write → summarise, for one method on the whole series."""
    clock = _Stopwatch()
    derivation = _derivation(images, method, settings)
    with clock.stage("enhance_s"):
        outputs = _enhance_all(images, method)
    with clock.stage("measure_s"):
        root = derivation.uid_root
        measured = [
            _measure(
                source,
                output,
                method,
                settings,
                derived_instance_uid(root, source.sop, method.version),
            )
            for source, output in zip(images, outputs, strict=True)
        ]
    with clock.stage("write_s"):
        written = _write(images, outputs, measured, method, derivation, settings, sink)
    outcome = MethodOutcome(
        method=method.name,
        version=method.version,
        model_sha256=method.model_sha256,
        scale=method.scale,
        device=method.device,
        derived_series_uid=derivation.series_uid,
        report_series_uid=written.report_series_uid,
        report_sop_uid=written.report.sop_instance_uid,
        images=tuple(measured),
        timings=StageTimings(**clock.seconds),
    )
    return [written.images, [written.report]], outcome


def enhance_series(
    job_id: int,
    inputs: list[SpooledInstance],
    settings: Settings,
    methods: list[Method],
    sink: Sink,
) -> SeriesOutput:
    """Derived series and reports for every method, each file handed to `sink` to store."""
    started = time.perf_counter()
    images, declined = _load(inputs)
    load_s = time.perf_counter() - started
    unenhanced = {item.sop for item in declined}
    if not images:
        status = "skipped: no image in the series can be enhanced"
        return SeriesOutput([], SeriesOutcome(status, load_s, declined), unenhanced)
    modality = images[0].modality
    if modality not in settings.enhance.modalities:
        status = f"skipped: modality {modality or '(none)'} not enabled"
        everything = {item.sop_instance_uid for item in inputs}
        return SeriesOutput([], SeriesOutcome(status, load_s, declined), everything)
    files: list[list[SpooledInstance]] = []
    outcomes = []
    for method in methods:
        series, outcome = _run_method(images, method, settings, sink)
        files.extend(series)
        outcomes.append(outcome)
        log.info(
            "enhanced job=%d method=%s series=%s images=%d psnr=%.2f ssim=%.4f qa=%s device=%s",
            job_id,
            method.name,
            outcome.derived_series_uid,
            len(outcome.images),
            outcome.psnr_mean_db or float("nan"),
            outcome.ssim_mean,
            outcome.qa,
            outcome.device,
        )
    return SeriesOutput(files, SeriesOutcome(DONE, load_s, declined, tuple(outcomes)), unenhanced)
