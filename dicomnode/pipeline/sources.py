"""A job's source images, read from the spool: what decodes, and why the rest does not."""

from dataclasses import dataclass

from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.db import SpooledInstance
from dicomnode.dicom.bounded import read_bounded
from dicomnode.errors import DecodeError, ImageDeclined, InstanceTooLarge, SeriesTooLarge
from dicomnode.imaging.outcome import DeclinedImage
from dicomnode.imaging.pixels import ModalityImage, to_modality

# What a job holds per source pixel once it is loaded and measured: the stored pixels, the
# float32 values, the padding and body masks and the rest (2.9 MB per 512x512 CT slice measured).
JOB_BYTES_PER_PIXEL = 12


def integer_of(ds: Dataset, keyword: str, default: int = 0) -> int:
    """An IS attribute's value, or `default` when absent, empty or not an integer string (a
    de-identified or non-conformant header must not stop the enhancement)."""
    try:
        return int(ds.get(keyword) or default)
    except (TypeError, ValueError):
        return default


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


def load_sources(
    inputs: list[SpooledInstance], max_bytes: int = 0, max_series_bytes: int = 0
) -> tuple[list[SourceImage], tuple[DeclinedImage, ...]]:
    """The decodable images in InstanceNumber order, and a reason for each one that is not.

    A file that is, or inflates to, more than `max_bytes` (node.max_instance_mb) is declined
    unread, as the receiver would have refused it. A series whose images would take more than
    `max_series_bytes` (enhance.max_series_mb; 0: no limit) raises SeriesTooLarge at the first
    image past it, which the job then lets go: at most one image more than the limit is held.
    What is counted is each image as decoded (`JOB_BYTES_PER_PIXEL`), not as its header says:
    a header that lies (65535 rows of a few bytes) is that image's own reason, not its series'.
    """
    images, declined = [], []
    series_bytes = 0
    for item in inputs:
        try:
            dataset = read_bounded(item.path, max_bytes)
            image = to_modality(dataset)
            series_bytes += image.values.size * JOB_BYTES_PER_PIXEL
            if max_series_bytes and series_bytes > max_series_bytes:
                raise SeriesTooLarge(_too_large(dataset, len(inputs), max_series_bytes))
            images.append(SourceImage(dataset, image))
        except (ImageDeclined, InstanceTooLarge, DecodeError) as exc:
            declined.append(DeclinedImage(item.sop_instance_uid, str(exc)))
        except (InvalidDicomError, OSError, ValueError) as exc:
            reason = f"sop={item.sop_instance_uid}: cannot read {item.path}: {exc}"
            declined.append(DeclinedImage(item.sop_instance_uid, reason))
    images.sort(key=lambda s: (integer_of(s.dataset, "InstanceNumber"), s.sop))
    return images, tuple(declined)


def _too_large(dataset: Dataset, instances: int, limit: int) -> str:
    return (
        f"series={dataset.get('SeriesInstanceUID', '')} too large to enhance: its {instances} "
        "instances would take more than "
        f"enhance.max_series_mb={limit // 1048576} MB in memory (~{JOB_BYTES_PER_PIXEL} bytes "
        "per pixel); raise the setting with the node's memory to enhance such series"
    )
