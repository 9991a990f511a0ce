"""A job's source images, read from the spool: what decodes, and why the rest does not."""

from dataclasses import dataclass

from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.db import SpooledInstance
from dicomnode.dicom.bounded import read_bounded
from dicomnode.errors import DecodeError, ImageDeclined, InstanceTooLarge
from dicomnode.imaging.outcome import DeclinedImage
from dicomnode.imaging.pixels import ModalityImage, to_modality


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
    inputs: list[SpooledInstance], max_bytes: int = 0
) -> tuple[list[SourceImage], tuple[DeclinedImage, ...]]:
    """The decodable images in InstanceNumber order, and a reason for each one that is not.

    A file that is, or inflates to, more than `max_bytes` (node.max_instance_mb) is declined
    unread, as the receiver would have refused it.
    """
    images, declined = [], []
    for item in inputs:
        try:
            dataset = read_bounded(item.path, max_bytes)
            images.append(SourceImage(dataset, to_modality(dataset)))
        except (ImageDeclined, InstanceTooLarge, DecodeError) as exc:
            declined.append(DeclinedImage(item.sop_instance_uid, str(exc)))
        except (InvalidDicomError, OSError, ValueError) as exc:
            reason = f"sop={item.sop_instance_uid}: cannot read {item.path}: {exc}"
            declined.append(DeclinedImage(item.sop_instance_uid, reason))
    images.sort(key=lambda s: (integer_of(s.dataset, "InstanceNumber"), s.sop))
    return images, tuple(declined)
