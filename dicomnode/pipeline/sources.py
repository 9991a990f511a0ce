"""A job's source images, read from the spool: what decodes, and why the rest does not."""

from dataclasses import dataclass
from functools import cached_property

from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.db import SpooledInstance
from dicomnode.dicom.bounded import read_bounded
from dicomnode.dicom.endian import little_endian
from dicomnode.errors import DecodeError, ImageDeclined, InstanceTooLarge, SeriesTooLarge
from dicomnode.imaging.metrics import data_range_of
from dicomnode.imaging.outcome import TOO_LARGE, DeclinedImage
from dicomnode.imaging.pixels import ModalityImage, pixel_domain, to_modality
from dicomnode.warning_subject import about

# What a job holds per source pixel once it is loaded and measured: the stored pixels, the
# float32 values, the padding and body masks and the rest (2.9 MB per 512x512 CT slice measured).
JOB_BYTES_PER_PIXEL = 12
# A multi-frame image goes through a method whole, not in STACK_PIXELS' worth per call: its
# working copies and outputs come on top (34-36 bytes per pixel measured, 64 and 500 frames).
MULTI_FRAME_BYTES_PER_PIXEL = 36


def integer_of(ds: Dataset, keyword: str, default: int = 0) -> int:
    """An IS attribute's value, or `default` when absent, empty or not an integer string (a
    de-identified or non-conformant header must not stop the enhancement)."""
    try:
        return int(ds.get(keyword) or default)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class SourceImage:
    dataset: Dataset
    image: ModalityImage

    @property
    def sop(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def modality(self) -> str:
        return str(self.dataset.get("Modality", "")).upper()

    @cached_property
    def scored_frame(self) -> int:
        """The frame the image is scored on: the middle one of a multi-frame image, or, when
        that one is blank (a run's empty frame), the nearest one that is not; the middle one
        when all are (the image is then declined as blank). Found once: the job's scoring, QA
        and self-check all ask."""
        frames = len(self.image.values)
        middle = frames // 2
        if frames == 1:
            return 0
        nearest_first = sorted(range(frames), key=lambda frame: abs(frame - middle))
        return next((frame for frame in nearest_first if not self.is_blank(frame)), middle)

    def is_blank(self, frame: int) -> bool:
        """Every pixel of `frame`, padding aside, of one value (a run's empty frame)."""
        return not data_range_of(self.image.values[frame], self.image.padding[frame]) > 0


def load_sources(
    inputs: list[SpooledInstance], max_bytes: int = 0, max_series_bytes: int = 0
) -> tuple[list[SourceImage], tuple[DeclinedImage, ...]]:
    """The decodable images in InstanceNumber order, and a reason for each one that is not.

    A file that is, or inflates to, more than `max_bytes` (node.max_instance_mb) is declined
    unread, as the receiver would have refused it. A series whose images would take more than
    `max_series_bytes` (enhance.max_series_mb; 0: no limit) raises SeriesTooLarge at the first
    image past it, told from its header before it is decoded (`_job_bytes`).
    """
    images, declined = [], []
    series_bytes = 0
    for item in inputs:
        with about(f"sop={item.sop_instance_uid}"):  # pydicom's warnings name the instance
            try:
                dataset = read_bounded(item.path, max_bytes)
                if dataset.original_encoding[1] is False:  # Explicit VR Big Endian (retired)
                    dataset = little_endian(dataset)  # as it is forwarded to a PACS without it
                series_bytes += _job_bytes(dataset)
                if max_series_bytes and series_bytes > max_series_bytes:
                    raise SeriesTooLarge(_too_large(dataset, len(inputs), max_series_bytes))
                images.append(SourceImage(dataset, to_modality(dataset)))
            except (ImageDeclined, InstanceTooLarge, DecodeError) as exc:
                declined.append(DeclinedImage(item.sop_instance_uid, str(exc)))
            except (InvalidDicomError, OSError, ValueError) as exc:
                reason = f"sop={item.sop_instance_uid}: cannot read {item.path}: {exc}"
                declined.append(DeclinedImage(item.sop_instance_uid, reason))
    images.sort(key=lambda s: (integer_of(s.dataset, "InstanceNumber"), s.sop))
    return images, tuple(declined)


def _job_bytes(dataset: Dataset) -> int:
    """What a job would hold of this image once decoded (`JOB_BYTES_PER_PIXEL`), from its
    header, as a decoder sizes its output: a compressed image of a few KB may decode to GBs.

    0 for an image decoding will decline, as its own fault and not its series': a header no
    enhancement takes (colour, bits), or native pixel data shorter than its header says (65535
    rows of a few bytes)."""
    try:
        domain = pixel_domain(dataset)
    except ImageDeclined:
        return 0
    frames = max(1, integer_of(dataset, "NumberOfFrames", 1))
    pixels = integer_of(dataset, "Rows") * integer_of(dataset, "Columns") * frames
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    native = syntax is None or not syntax.is_compressed
    if native and len(dataset.get("PixelData") or b"") < pixels * domain.bits_allocated // 8:
        return 0
    return pixels * (MULTI_FRAME_BYTES_PER_PIXEL if frames > 1 else JOB_BYTES_PER_PIXEL)


def _too_large(dataset: Dataset, instances: int, limit: int) -> str:
    return (
        f"{TOO_LARGE}: series={dataset.get('SeriesInstanceUID', '')}, {instances} instances, "
        f"more than enhance.max_series_mb={limit // 1048576} MB in memory "
        f"(~{JOB_BYTES_PER_PIXEL} bytes per pixel, {MULTI_FRAME_BYTES_PER_PIXEL} for a "
        "multi-frame image); raise it (with the node's memory) and "
        "send the series again"
    )


# Modalities of objects without images, which a sender may put in an image series (a report,
# a key object selection, a presentation state): they do not say what the series' images are.
_NOT_IMAGES = frozenset({"SR", "KO", "PR", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN", "RTRECORD"})


def series_header(inputs: list[SpooledInstance], max_bytes: int = 0) -> Dataset | None:
    """The first header that reads and is an image's (a series has one; an SR that came with
    it, first in UID order, made a CT series "SR not enabled"); a non-image's only when no
    image's reads; None when none does. Read before the images, so a series not to be
    enhanced is not read."""
    other = None
    for item in inputs:
        try:
            with about(f"sop={item.sop_instance_uid}"):  # its warnings name it (and only here)
                header = read_bounded(item.path, max_bytes, stop_before_pixels=True)
        except (InstanceTooLarge, DecodeError, InvalidDicomError, OSError, ValueError):
            continue
        if modality_in(header) not in _NOT_IMAGES:
            return header
        other = other or header
    return other


def modality_in(header: Dataset) -> str:
    return str(header.get("Modality", "")).upper()


def modality_of(inputs: list[SpooledInstance], max_bytes: int = 0) -> str | None:
    """The series' modality (`series_header`'s); None when no header reads."""
    header = series_header(inputs, max_bytes)
    return None if header is None else modality_in(header)
