"""One job's enhancement: load the series, run each method, measure, write derived series + SR.

For every configured method the job gets one derived series (same study, new deterministic UIDs)
and one metrics report, written to the spool's outbox before anything is forwarded. Images that
cannot be enhanced (colour, float, undecodable, ...) are listed with their reason and still go
out unchanged with the originals. What happened is returned as plain data for the job's
`details` (device, model, timings, metrics per image and per series).
"""

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.dicom.derive import Derivation, derived_instance, derived_series_uid, derived_uid
from dicomnode.dicom.report import ImageMeasures, metrics_report
from dicomnode.errors import ImageDeclined
from dicomnode.imaging.degrade import Degradation, resample
from dicomnode.imaging.enhance import Method, enhance_stack
from dicomnode.imaging.metrics import compare, self_check
from dicomnode.imaging.normalize import CT_HU_RANGE
from dicomnode.imaging.pixels import ModalityImage, to_modality, to_stored
from dicomnode.imaging.qa import assess, worst_verdict
from dicomnode.pipeline.methods import qa_thresholds
from dicomnode.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class SourceImage:
    dataset: Dataset
    image: ModalityImage

    @property
    def sop(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass
class SeriesOutput:
    """What the job forwards after the originals, and what it records."""

    series: list[list[SpooledInstance]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    qa_failed: bool = False
    # Source instances no derived image stands for (undecodable, or the series not enhanced).
    unenhanced: set[str] = field(default_factory=set)


def _load(inputs: list[SpooledInstance]) -> tuple[list[SourceImage], list[dict[str, str]]]:
    images, skipped = [], []
    for item in inputs:
        try:
            dataset = dcmread(item.path)
            images.append(SourceImage(dataset, to_modality(dataset)))
        except ImageDeclined as exc:
            skipped.append({"sop": item.sop_instance_uid, "reason": str(exc)})
        except (InvalidDicomError, OSError, ValueError) as exc:
            reason = f"sop={item.sop_instance_uid}: cannot read {item.path}: {exc}"
            skipped.append({"sop": item.sop_instance_uid, "reason": reason})
    images.sort(key=lambda s: (int(s.dataset.get("InstanceNumber", 0) or 0), s.sop))
    return images, skipped


def _enhance_all(images: list[SourceImage], modality: str, method: Method) -> list[np.ndarray]:
    """Outputs per image; images of one frame shape run as one stack (SRCNN batches them)."""
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
    source: SourceImage, output: np.ndarray, modality: str, method: Method, settings: Settings
) -> dict[str, Any]:
    """Fidelity, self-check and QA for one image (middle frame of a multi-frame image)."""
    frame = len(output) // 2
    reference = source.image.values[frame]
    padding = source.image.padding[frame]
    if modality == "CT":  # outside the reconstruction circle: not scored (as in `evaluate`)
        padding = padding | (reference < CT_HU_RANGE[0])
    result = _on_source_grid(output[frame], reference.shape)
    fidelity = compare(reference, result, padding=padding)
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
            lambda low: enhance_stack(low[None], modality, method).values[0],
            Degradation(scale=method.scale),
            padding=padding,
        )
        gain = round(check.gain_db, 4)
    return {
        "psnr_db": round(fidelity.psnr_db, 4),
        "ssim": round(fidelity.ssim, 4),
        "data_range": fidelity.data_range,
        "self_check_gain_db": gain,
        "qa": verdict.verdict,
        "qa_reasons": list(verdict.reasons),
    }


def _comment(method: Method, measures: dict[str, Any]) -> str:
    text = (
        f"{method.name.upper()} x{method.scale} {method.version}: "
        f"PSNR {measures['psnr_db']:.2f} dB, "
        f"SSIM {measures['ssim']:.4f} vs source"
    )
    if measures["self_check_gain_db"] is not None:
        text += f"; self-check {measures['self_check_gain_db']:+.2f} dB vs bicubic"
    return text + f"; QA {measures['qa']}"


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


def _run_method(
    job_id: int,
    images: list[SourceImage],
    method: Method,
    settings: Settings,
    sink: Sink,
) -> tuple[list[list[SpooledInstance]], dict[str, Any]]:
    enhance = settings.enhance
    root = enhance.uid_root or None
    first = images[0].dataset
    modality = str(first.get("Modality", "OT")).upper()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    outputs = _enhance_all(images, modality, method)
    timings["enhance_s"] = time.perf_counter() - started

    started = time.perf_counter()
    measures = [
        _measure(s, o, modality, method, settings) for s, o in zip(images, outputs, strict=True)
    ]
    timings["measure_s"] = time.perf_counter() - started

    started = time.perf_counter()
    series_uid = derived_series_uid(str(first.SeriesInstanceUID), method.version, root)
    offset = getattr(enhance, f"{method.name}_series_offset")
    description = f"{method.name.upper()} x{method.scale} {first.get('SeriesDescription', '')}"
    derivation = Derivation(
        method=method.name,
        version=method.version,
        scale=method.scale,
        description=(
            f"dicomnode {method.name} {method.version}, scale {method.scale}; "
            "intensities in the source's rescale; metrics vs source in ImageComments"
        ),
        series_uid=series_uid,
        series_number=_series_number(first, offset),
        series_description=description.strip(),
        uid_root=root,
        processed_at=datetime.now(),
    )
    sources = [(str(s.dataset.SOPClassUID), s.sop) for s in images]
    derived_files, reported = [], []
    for source, output, measured in zip(images, outputs, measures, strict=True):
        scale = method.scale
        padding = _upsampled(source.image.padding, scale)
        padding_stored = _upsampled(source.image.stored, scale)
        stored = to_stored(output, source.image.domain, padding, padding_stored)
        derived = derived_instance(
            source.dataset,
            stored,
            derivation,
            series_sources=sources,
            comments=_comment(method, measured),
        )
        derived_files.append(sink(derived))
        measured["sop"] = str(derived.SOPInstanceUID)
        measured["source_sop"] = source.sop
        reported.append(
            ImageMeasures(
                derived,
                source.dataset,
                measured["psnr_db"],
                measured["ssim"],
                measured["self_check_gain_db"],
                measured["qa"],
            )
        )
    report_series = derived_uid(root, "report-series", series_uid)
    report = metrics_report(
        reported,
        series_uid=report_series,
        series_number=derivation.series_number + enhance.report_series_offset,
        sop_uid=derived_uid(root, "report", series_uid, method.version),
        description=f"Metrics {description}".strip(),
    )
    report_file = sink(report)
    timings["write_s"] = time.perf_counter() - started

    worst = worst_verdict(m["qa"] for m in measures)
    gains = [m["self_check_gain_db"] for m in measures if m["self_check_gain_db"] is not None]
    finite = [m["psnr_db"] for m in measures if np.isfinite(m["psnr_db"])]
    summary = {
        "method": method.name,
        "version": method.version,
        "model_sha256": getattr(method, "sha256", None),  # SRCNN only: the model file's hash
        "scale": method.scale,
        "device": method.device,
        "derived_series_uid": series_uid,
        "report_series_uid": report_series,
        "report_sop_uid": report_file.sop_instance_uid,
        "images": len(measures),
        "psnr_mean_db": round(float(np.mean(finite)), 4) if finite else None,
        "ssim_mean": round(float(np.mean([m["ssim"] for m in measures])), 4),
        "self_check_gain_mean_db": round(float(np.mean(gains)), 4) if gains else None,
        "qa": worst,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "per_image": measures,
    }
    return [derived_files, [report_file]], summary


def enhance_series(
    job_id: int,
    inputs: list[SpooledInstance],
    settings: Settings,
    methods: list[Method],
    sink: Sink,
) -> SeriesOutput:
    """Derived series and reports for every method, each file handed to `sink` to store."""
    output = SeriesOutput()
    started = time.perf_counter()
    images, skipped = _load(inputs)
    output.details = {"load_s": round(time.perf_counter() - started, 3), "skipped": skipped}
    output.unenhanced = {item["sop"] for item in skipped}
    if not images:
        output.details["enhancement"] = "skipped: no image in the series can be enhanced"
        return output
    modality = str(images[0].dataset.get("Modality", "")).upper()
    if modality not in settings.enhance.modalities:
        output.details["enhancement"] = f"skipped: modality {modality or '(none)'} not enabled"
        output.unenhanced = {item.sop_instance_uid for item in inputs}
        return output
    summaries = []
    for method in methods:
        series, summary = _run_method(job_id, images, method, settings, sink)
        output.series.extend(series)
        summaries.append(summary)
        output.qa_failed |= summary["qa"] == "fail"
        log.info(
            "enhanced job=%d method=%s series=%s images=%d psnr=%.2f ssim=%.4f qa=%s device=%s",
            job_id,
            method.name,
            summary["derived_series_uid"],
            summary["images"],
            summary["psnr_mean_db"] or float("nan"),
            summary["ssim_mean"],
            summary["qa"],
            summary["device"],
        )
    output.details["enhancement"] = "done"
    output.details["methods"] = summaries
    return output
