"""Images for training and evaluation: found in folders, grouped, split without leakage.

Every 2-D image (each frame of a multi-frame instance) becomes a `CorpusImage` in modality units
with its padding mask, its modality and the *group* it belongs to: the patient (PatientID, else
the series). The train/validation split assigns whole groups, per modality, so no patient (and
therefore no series, slice or patch) is on both sides.

CT pixels below -1024 HU are outside the reconstruction circle (scanners fill it with -2048 or
-3024 when they set no PixelPaddingValue): not tissue and not air, so they count as padding
(`to_modality`) and are left out of every score, as a declared PixelPaddingValue would be.
"""

import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.errors import DicomNodeError, ImageDeclined, PixelsUndecodable
from dicomnode.imaging.pixels import to_modality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusImage:
    path: Path
    frame: int
    modality: str
    group: str  # the split unit: patient, else series
    series: str
    values: np.ndarray  # 2-D float32, modality units
    padding: np.ndarray  # 2-D bool
    plane: str = "unknown"  # axial, coronal, sagittal (from ImageOrientationPatient), oblique
    inverted: bool = False  # MONOCHROME1: turned in the working range, as the node does

    @property
    def name(self) -> str:
        return f"{self.path.name}#{self.frame}" if self.frame else self.path.name


def pseudonym(group: str) -> str:
    """A stable stand-in for a patient id: what we report or ship must not carry PHI from a
    site's own data."""
    return hashlib.sha256(group.encode()).hexdigest()[:12]


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise DicomNodeError(f"{path}: no such file or folder")
    return found


def plane_of(orientation: Sequence[float] | None) -> str:
    """The anatomical plane an image lies in, from its row and column direction cosines."""
    if orientation is None or len(orientation) != 6:
        return "unknown"
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:  # more than ~37 degrees from every plane
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]  # normal along x, y (LPS), z


def load_images(paths: Sequence[Path], *, min_size: int = 32) -> list[CorpusImage]:
    """Every usable grayscale 2-D image under `paths`, in a stable order; others are skipped."""
    images: list[CorpusImage] = []
    for file in _files(paths):
        try:
            ds = dcmread(file)
        except InvalidDicomError as exc:  # a README, a DICOMDIR's neighbours: not for us
            log.info("skipped file=%s reason=not DICOM: %s", file, exc)
            continue
        try:
            image = to_modality(ds)
        except (ImageDeclined, AttributeError) as exc:
            # An image that cannot be used (cut short, undecodable) changes what is scored or
            # learnt: said where a user sees it. A report or a document has no image to lose.
            damaged = isinstance(exc, PixelsUndecodable | AttributeError)
            log.log(
                logging.WARNING if damaged else logging.INFO, "skipped file=%s reason=%s", file, exc
            )
            continue
        series = str(ds.get("SeriesInstanceUID", file.parent))
        group = str(ds.get("PatientID", "") or series)
        orientation = ds.get("ImageOrientationPatient")
        plane = plane_of([float(v) for v in orientation] if orientation else None)
        for frame, (values, padding) in enumerate(zip(image.values, image.padding, strict=True)):
            if min(values.shape) < min_size:
                log.info(
                    "skipped file=%s frame=%d reason=smaller than %d px", file, frame, min_size
                )
                continue
            modality = str(ds.get("Modality", "OT")).upper()
            images.append(
                CorpusImage(
                    file,
                    frame,
                    modality,
                    group,
                    series,
                    values,
                    padding,
                    plane,
                    inverted=image.domain.inverted,
                )
            )
    if not images:
        raise DicomNodeError(f"no usable grayscale DICOM images under {', '.join(map(str, paths))}")
    return images


def split_by_group(
    images: Sequence[CorpusImage], validation_fraction: float = 0.2, seed: int = 0
) -> tuple[list[CorpusImage], list[CorpusImage]]:
    """Whole groups to each side, per modality; a modality with one group trains only."""
    groups: dict[str, set[str]] = defaultdict(set)
    for image in images:
        groups[image.modality].add(image.group)
    validation: set[str] = set()
    rng = random.Random(seed)
    for modality, members in sorted(groups.items()):
        ordered = sorted(members)
        rng.shuffle(ordered)
        count = round(len(ordered) * validation_fraction) if len(ordered) > 1 else 0
        validation.update(ordered[: max(count, 1 if len(ordered) > 1 else 0)])
        if len(ordered) == 1:
            log.warning("modality=%s has a single patient/series: all of it trains", modality)
    train = [i for i in images if i.group not in validation]
    held = [i for i in images if i.group in validation]
    return train, held
