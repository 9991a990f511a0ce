"""One method's derived series as DICOM: the derived images and their metrics report.

Each image is derived and encoded on its own (`derive_image`), as soon as its output and its
scores exist, so the job can do it while the method works on the next images, and handed to the
sink at once by a thread of its own (`ImageStore`: writing a file durably mostly waits on the
disk). Then the report is built; a series whose report cannot be built does not go out, and its
images are taken back from the sink (`ImageStore.discard`), as are those of a job that fails.
(A process killed meanwhile leaves them: the job's next attempt clears them first.)
An image whose header the standard does not let us derive from (`ImageDeclined`: see
`dicom.conformance`) is left out with its reason: its source still goes to the PACS as it came.
"""

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Protocol

import numpy as np
from pydicom import Dataset

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.dicom.derive import Derivation, derived_instance, derived_series_uid, derived_uid
from dicomnode.dicom.report import ImageMeasures, metrics_report
from dicomnode.errors import DicomNodeError, ImageDeclined
from dicomnode.imaging.enhance import Method
from dicomnode.imaging.outcome import DeclinedImage, ImageOutcome, self_check_reference
from dicomnode.imaging.pixels import to_stored
from dicomnode.pipeline.sources import SourceImage, integer_of
from dicomnode.registry import method_spec
from dicomnode.spool import Spool

log = logging.getLogger(__name__)

MAX_WAITING_TO_STORE = 32  # encoded images (~0.5 MB each for a 512² CT) waiting for the disk


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


class Sink(Protocol):
    """Where a job's output files go: the spool's outbox (`outbox_sink`), or a folder offline
    (`offline.file_sink`)."""

    def __call__(self, instance: EncodedInstance) -> SpooledInstance:
        """Store `instance` durably (replacing a file of the same UIDs) and say where."""
        ...

    def holds(self, instance: EncodedInstance) -> bool:
        """Whether a file of `instance`'s UIDs is there already (an earlier run's)."""
        ...


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


class _Outbox:
    def __init__(self, spool: Spool, job_id: int, attempt: str) -> None:
        self._spool, self._job_id, self._attempt = spool, job_id, attempt

    def __call__(self, instance: EncodedInstance) -> SpooledInstance:
        path = self._spool.write_outbox(
            self._job_id,
            self._attempt,
            instance.series_instance_uid,
            instance.sop_instance_uid,
            instance.data,
        )
        return instance.spooled(path)

    def holds(self, instance: EncodedInstance) -> bool:
        return self._spool.outbox_path(
            self._job_id, self._attempt, instance.series_instance_uid, instance.sop_instance_uid
        ).exists()


def outbox_sink(spool: Spool, job_id: int, attempt: str) -> Sink:
    """Where one attempt at a job puts its outputs: its folder in the spool's outbox
    (`Spool.outbox_attempt`), durably."""
    return _Outbox(spool, job_id, attempt)


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
        reference = self_check_reference(method.scale)
        text += f"; self-check {image.self_check_gain_db:+.2f} dB vs {reference}"
    if len(image.self_check_frames) > 1:
        worst = min(image.self_check_frames, key=lambda checked: checked.gain_db)
        text += (
            f" (mean of {len(image.self_check_frames)} frames, worst {worst.gain_db:+.2f} dB "
            f"in frame {worst.frame + 1})"
        )
    return text + f"; QA {image.qa.verdict}"


def upsampled(pixels: np.ndarray, scale: int) -> np.ndarray:
    """A source's padding mask or stored values on the output grid: each pixel `scale` x
    `scale` times (the padding is put back exactly where it was)."""
    return np.repeat(np.repeat(pixels, scale, axis=-2), scale, axis=-1) if scale > 1 else pixels


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
    padding = upsampled(source.image.padding, method.scale)
    padding_stored = upsampled(source.image.stored, method.scale)
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
class StoredImage:
    """One derived image in the sink, and what its series' report says of it."""

    file: SpooledInstance
    measures: ImageMeasures


class ImageStore:
    """Derived images handed to the sink as they are made, by one thread of its own: a durable
    write mostly waits on the disk, which the images after it need not do, and the encoded
    bytes are let go once written (at most `MAX_WAITING_TO_STORE` wait; `put` blocks beyond).
    `discard` takes back the files it created, for a series that does not go out after all
    (its report not built, the job failed); in an offline folder, a file an earlier run left
    under the same UIDs (derived UIDs are deterministic) is replaced by the same image and kept
    by `discard` (in the outbox each attempt has a folder of its own)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._room = threading.BoundedSemaphore(MAX_WAITING_TO_STORE)
        self._created: list[Path] = []  # appended by the store thread only

    def put(self, image: DerivedImage) -> "Future[StoredImage]":
        """Store `image` after those put before it (called from one thread at a time)."""
        self._room.acquire()
        return self._thread.submit(self._store, image)

    def _store(self, image: DerivedImage) -> StoredImage:
        try:
            existed = self._sink.holds(image.file)
            stored = StoredImage(self._sink(image.file), image.measures)
            if not existed:
                self._created.append(stored.file.path)
            return stored
        finally:
            self._room.release()

    def close(self) -> None:
        """Wait for the files being written; no image is put after this."""
        self._thread.shutdown(wait=True)

    def discard(self) -> None:
        """Remove the files this store created (and their folder, once empty). A file that
        cannot be removed is logged, not raised: the error that led here is the one to report."""
        self.close()
        paths = list(self._created)
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("derived image not removed path=%s: %s", path, exc)
        for folder in {path.parent for path in paths}:
            with suppress(OSError):  # not empty: other outputs live there too
                folder.rmdir()


@dataclass(frozen=True)
class WrittenSeries:
    """What reached the sink: the derived images (in order), their report, and what they are."""

    images: list[SpooledInstance]
    report: SpooledInstance
    report_series_uid: str
    measured: tuple[ImageOutcome, ...]  # the images that were derived


def report_uid(root: str | None, series_uid: str, version: str, images: Iterable[str]) -> str:
    """The metrics report's SOP Instance UID: the same derived series, version and images, the
    same UID (a retry or a resend replaces it). A series that grew since (a modality that sends
    its images minutes apart makes a job for each part) gets a report of another UID, since
    its content is other: a PACS that keeps the first copy of a UID kept the report of the
    first image only, beside a derived series of six. `images`: the derived images' SOP
    Instance UIDs."""
    return derived_uid(root, "report", series_uid, version, *sorted(images))


def write_derived_series(
    derived: Sequence[StoredImage | DeclinedImage],
    method: Method,
    derivation: Derivation,
    settings: Settings,
    sink: Sink,
    earlier_reports: Mapping[str, Sequence[str]] | None = None,
) -> tuple[WrittenSeries | None, list[DeclinedImage]]:
    """Build the report of the stored derived images (in series order) and hand it to `sink`;
    None when no image could be derived (or the report could not be built: the caller then
    discards the images), with the reason for each left out. `earlier_reports`: the reports
    made before for this source series, by report series (the report names those of its own
    series as its predecessors)."""
    built = [image for image in derived if isinstance(image, StoredImage)]
    declined = [image for image in derived if isinstance(image, DeclinedImage)]
    if not built:
        return None, declined
    root = derivation.uid_root
    report_series = derived_uid(root, "report-series", derivation.series_uid)
    sop_uid = report_uid(
        root, derivation.series_uid, method.version, (i.measures.outcome.sop for i in built)
    )
    earlier = (earlier_reports or {}).get(report_series, ())
    try:
        report = metrics_report(
            [image.measures for image in built],
            series_uid=report_series,
            series_number=derivation.series_number + settings.enhance.report_series_offset,
            sop_uid=sop_uid,
            description=f"Metrics {derivation.series_description}".strip(),
            predecessors=[uid for uid in earlier if uid != sop_uid],  # not a retry's own
        )
    except DicomNodeError as exc:  # without its report a derived series does not go out
        why = f"metrics report not built: {exc} (method {method.name})"
        unreported = [
            DeclinedImage(sop, f"sop={sop}: {why}")
            for sop in (image.measures.outcome.source_sop for image in built)
        ]
        return None, declined + unreported
    files = [image.file for image in built]
    measured = tuple(image.measures.outcome for image in built)
    return WrittenSeries(files, sink(encoded(report)), report_series, measured), declined
