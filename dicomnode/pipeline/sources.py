"""A job's source images, read from the spool: what decodes, and why the rest does not."""

from dataclasses import dataclass

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.db import SpooledInstance
from dicomnode.errors import ImageDeclined
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
    inputs: list[SpooledInstance],
) -> tuple[list[SourceImage], tuple[DeclinedImage, ...]]:
    """The decodable images in InstanceNumber order, and a reason for each one that is not."""
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
    images.sort(key=lambda s: (integer_of(s.dataset, "InstanceNumber"), s.sop))
    return images, tuple(declined)
