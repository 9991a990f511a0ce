"""A derived image from its source: new identity, DERIVED type, references, re-derived pixels.

Follows the DICOM rules for a derived image item by item (PS3.3 citations inline). The source is
never modified; the derived one keeps the patient, study, frame of reference and acquisition
attributes, and replaces what the processing changed. UIDs are deterministic: the same source,
method version and parameters give the same derived UIDs, so a re-run replaces instead of
duplicating in the PACS.
"""

import copy
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

from dicomnode import __version__
from dicomnode.dicom.conformance import conform, copy_identity, shorten_decimal_strings
from dicomnode.dicom.lossy import lossy_history
from dicomnode.dicom.overlays import separate_embedded_overlays
from dicomnode.errors import ImageDeclined
from dicomnode.registry import Code

MANUFACTURER = "dicomnode"
# CID 7202 / 7201 purposes of reference (PS3.16)
SOURCE_IMAGE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
SOURCE_SERIES_PURPOSE = ("121323", "DCM", "Source series for image processing operation")
# CID 7005 contributing equipment purposes
ACQUISITION_EQUIPMENT = ("109101", "DCM", "Acquisition Equipment")
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")

IMPLEMENTATION_CLASS_UID = "2.25.133092372386306546349839390474722512813"  # fixed for dicomnode

# What a derived image cannot be built without: its identity and references (type 1, PS3.3
# C.7.2.1, C.7.3.1, C.12.1) and how its pixels are laid out (PS3.3 C.7.6.3).
_REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "BitsAllocated",
)

# Attributes the processing makes wrong or meaningless; dropped from the copy.
_DROPPED = (
    "IconImageSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "ReferencedSeriesSequence",
    "RelatedSeriesSequence",
    "ContributingEquipmentSequence",
    # only with encapsulated pixel data (PS3.3 C.7.6.3); the derived image's is native
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "EncapsulatedPixelDataValueTotalLength",
    # they speak of the source as created and signed (PS3.3 C.12.1), not of this instance
    "InstanceCreatorUID",
    "DigitalSignaturesSequence",
)


def code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def derived_uid(root: str | None, *parts: str) -> str:
    """A UID determined by `parts`: under `root`, else 2.25.<UUID from their SHA-256>.

    (pydicom's generate_uid ignores its entropy sources without a prefix, PS3.5 B.2.)
    """
    if root:
        return generate_uid(prefix=root, entropy_srcs=list(parts))
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()[:16]
    return f"2.25.{uuid.UUID(bytes=digest, version=5).int}"


@dataclass(frozen=True)
class Derivation:
    """What was done, by which version, and where the derived series goes."""

    method: str  # a name in `registry.METHODS`
    version: str  # model version or parameter string: part of every derived UID
    scale: int
    codes: tuple[Code, ...]  # DerivationCodeSequence (CID 7203), from the method's spec
    description: str  # DerivationDescription: method, version, parameters
    series_uid: str
    series_number: int
    series_description: str
    uid_root: str | None
    processed_at: datetime


def derived_instance_uid(root: str | None, source_sop_uid: str, version: str) -> str:
    """The derived image's SOP Instance UID: the same source and version, the same UID."""
    return derived_uid(root, "instance", source_sop_uid, version)


def derived_series_uid(source_series_uid: str, version: str, root: str | None) -> str:
    return derived_uid(root, "series", source_series_uid, version)


def _utc_offset(ds: Dataset) -> timezone | None:
    """The instance's TimezoneOffsetFromUTC as a zone; None when it has none, or one that is
    not an offset (PS3.3 C.12.1.1.8: "&ZZXX", here within -12:00 … +14:00)."""
    found = re.fullmatch(r"([+-])(\d\d)(\d\d)", str(ds.get("TimezoneOffsetFromUTC", "")).strip())
    if found is None or int(found[3]) >= 60:
        return None
    offset = (1 if found[1] == "+" else -1) * timedelta(hours=int(found[2]), minutes=int(found[3]))
    return timezone(offset) if timedelta(hours=-12) <= offset <= timedelta(hours=14) else None


def _on_source_clock(when: datetime, ds: Dataset) -> datetime:
    """`when` as the instance's times are read: at its TimezoneOffsetFromUTC when it carries
    one (PS3.3 C.12.1.1.8; copied from the source), else on the node's own clock. A node
    in a UTC container would otherwise stamp a +0100 study an hour off."""
    aware = when if when.tzinfo is not None else when.astimezone()
    zone = _utc_offset(ds)
    return aware.astimezone(zone) if zone is not None else aware.astimezone()


def _set_times(ds: Dataset, when: datetime) -> None:
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time


# The IODs whose Image Type must have a value 3 (PS3.3 C.8.2.1.1.1 CT, C.8.3.1.1.1 MR): a
# source without one gets OTHER. Elsewhere none is made up: DX and MG enumerate value 3
# (C.8.11.1.1.1), and OTHER there is an error.
_VALUE_3_REQUIRED = frozenset({CTImageStorage, MRImageStorage})


# The IODs whose Image Type value 2 is PRIMARY, derived or not (PS3.3 C.8.9.4.1.1 PET,
# C.8.4.7.1.1 NM): SECONDARY there is an error.
_VALUE_2_PRIMARY = frozenset({PositronEmissionTomographyImageStorage, NuclearMedicineImageStorage})


def _image_type(source: Dataset) -> list[str]:
    """DERIVED\\SECONDARY (PET, NM: DERIVED\\PRIMARY), then the source's values 3 and on
    (PS3.3 C.7.6.1.1.2)."""
    rest = list(source.get("ImageType", []))[2:]
    if not rest and source.SOPClassUID in _VALUE_3_REQUIRED:
        rest = ["OTHER"]
    second = "PRIMARY" if source.SOPClassUID in _VALUE_2_PRIMARY else "SECONDARY"
    return ["DERIVED", second, *rest]


def _equipment(source: Dataset, derivation: Derivation) -> DicomSequence:
    """Who acquired the source and who processed it (PS3.3 C.7.5.1, CID 7005).

    `source` is the conformed copy: its General Equipment values are valid or gone.
    """
    acquired = Dataset()
    acquired.PurposeOfReferenceCodeSequence = [code_item(ACQUISITION_EQUIPMENT)]
    # Manufacturer is type 1 in a Contributing Equipment item (type 2 in the image).
    acquired.Manufacturer = source.get("Manufacturer", "") or "UNKNOWN"
    for keyword in ("InstitutionName", "ManufacturerModelName", "DeviceSerialNumber"):
        if source.get(keyword):
            setattr(acquired, keyword, source.get(keyword))
    processed = Dataset()
    processed.PurposeOfReferenceCodeSequence = [code_item(PROCESSING_EQUIPMENT)]
    processed.Manufacturer = MANUFACTURER
    processed.ManufacturerModelName = f"dicomnode {derivation.method}"
    processed.SoftwareVersions = __version__
    processed.ContributionDateTime = _on_source_clock(derivation.processed_at, source).strftime(
        "%Y%m%d%H%M%S"
    )
    processed.ContributionDescription = derivation.description[:1024]  # ST, as the derivation
    return DicomSequence([acquired, processed])


def processed_by_dicomnode(ds: Dataset) -> bool:
    """Whether `ds` is an image a dicomnode derived (its ContributingEquipmentSequence names
    dicomnode as processing equipment, as `_equipment` writes it): a PACS that routes every CT
    to the node, or a user who sends a study back, must not get a derived series of it again,
    each time it comes back."""
    try:
        return any(
            str(item.get("Manufacturer", "")) == MANUFACTURER
            and any(
                str(code.get("CodeValue", "")) == PROCESSING_EQUIPMENT[0]
                for code in item.get("PurposeOfReferenceCodeSequence", [])
            )
            for item in ds.get("ContributingEquipmentSequence", [])
        )
    except (TypeError, ValueError, AttributeError):  # a malformed sequence is no such claim
        return False


def _instance_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _references(derived: Dataset, source: Dataset, derivation: Derivation) -> None:
    """SourceImageSequence, ReferencedSeriesSequence and RelatedSeriesSequence.

    The Common Instance Reference Module (PS3.3 C.12.2) places the instances this one
    references elsewhere, here its source image: each derived image lists its own source, not
    the whole series (the metrics report references them all). A list of every instance in
    every image would grow the series by n² references (90,000 for 300 slices)."""
    item = _instance_reference(source)
    item.PurposeOfReferenceCodeSequence = [code_item(SOURCE_IMAGE_PURPOSE)]
    item.SpatialLocationsPreserved = "YES" if derivation.scale == 1 else "NO"
    derived.SourceImageSequence = [item]  # PS3.3 C.7.6.1.1.4
    # Common Instance Reference (PS3.3 C.12.2): the source series and its instances.
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedInstanceSequence = [_instance_reference(source)]
    derived.ReferencedSeriesSequence = [series]
    related = Dataset()
    related.StudyInstanceUID = source.StudyInstanceUID
    related.SeriesInstanceUID = source.SeriesInstanceUID
    related.PurposeOfReferenceCodeSequence = [code_item(SOURCE_SERIES_PURPOSE)]
    derived.RelatedSeriesSequence = [related]  # PS3.3 C.7.3.1


def _numbers(
    ds: Dataset, keyword: str, count: int, sop: str, section: str = "C.7.6.2"
) -> np.ndarray | None:
    """The attribute's `count` numbers, None when absent or empty; ImageDeclined if malformed
    (naming the PS3.3 `section` that defines it)."""
    if keyword not in ds or ds[keyword].VM == 0:
        return None
    values = ds[keyword].value
    values = list(values) if ds[keyword].VM > 1 else [values]
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        numbers = np.array([])
    if len(numbers) != count or not np.isfinite(numbers).all():
        raise ImageDeclined(
            f"sop={sop}: {keyword} is not {count} decimal numbers (PS3.3 {section}); "
            "the super-resolution grid cannot be placed"
        )
    return numbers


# Display shutters and X-ray collimators are given in pixel rows and columns (PS3.3 C.7.6.11,
# C.8.7.3): on the finer grid they must move with the pixels, or a viewer blacks out the image.
_FIRST_EDGES = (
    "ShutterLeftVerticalEdge",
    "ShutterUpperHorizontalEdge",
    "CollimatorLeftVerticalEdge",
    "CollimatorUpperHorizontalEdge",
)
_LAST_EDGES = (
    "ShutterRightVerticalEdge",
    "ShutterLowerHorizontalEdge",
    "CollimatorRightVerticalEdge",
    "CollimatorLowerHorizontalEdge",
)
_POINTS = (
    "CenterOfCircularShutter",
    "VerticesOfThePolygonalShutter",
    "CenterOfCircularCollimator",
    "VerticesOfThePolygonalCollimator",
)
_LENGTHS = ("RadiusOfCircularShutter", "RadiusOfCircularCollimator")


def _shutters(ds: Dataset, scale: int) -> None:
    """Shutter and collimator outlines onto the finer grid: pixel n (1-based) becomes pixels
    (n-1)*scale+1 ... n*scale, so a first edge takes the first of them, a last edge the last,
    and a point the centre of its block."""
    moves = (
        (_FIRST_EDGES, lambda v: (v - 1) * scale + 1),
        (_LAST_EDGES, lambda v: v * scale),
        (_POINTS, lambda v: round((v - 0.5) * scale + 0.5)),
        (_LENGTHS, lambda v: v * scale),
    )
    for keywords, move in moves:
        for keyword in keywords:
            if ds.get(keyword) in (None, ""):
                continue
            element = ds[keyword]
            values = list(element.value) if element.VM > 1 else [element.value]
            moved = [move(int(v)) for v in values]
            element.value = moved if element.VM > 1 else moved[0]


def _mask_shifts(ds: Dataset, scale: int, sop: str) -> None:
    """A subtraction's mask shift (PS3.3 C.7.6.10, MaskSubPixelShift: row and column, in
    pixels) onto the finer grid: left as it was, a viewer's DSA registration would be off by
    the scale. A malformed one declines the image, as other geometry does."""
    for mask in ds.get("MaskSubtractionSequence") or []:
        shift = _numbers(mask, "MaskSubPixelShift", 2, sop, "C.7.6.10")
        if shift is not None:
            mask.MaskSubPixelShift = [float(v) * scale for v in shift]


def _geometry(ds: Dataset, scale: int, sop: str) -> None:
    """Super-resolution grid: spacing / scale, first-pixel centre moved (edge-aligned grid).

    Without ImagePositionPatient (or without any plane geometry, e.g. secondary capture) there
    is nothing to move, and the finer grid is derived as it is. With a position but no spacing
    or orientation, the new first-pixel centre cannot be computed, so the image is declined
    rather than given a position a quarter pixel off. Gantry tilt needs nothing special: the
    shift runs along ImageOrientationPatient, whatever its obliquity.
    """
    if scale == 1:
        return
    _shutters(ds, scale)
    _ultrasound_regions(ds, scale)
    _mask_shifts(ds, scale, sop)
    spacings = {k: _numbers(ds, k, 2, sop) for k in ("PixelSpacing", "ImagerPixelSpacing")}
    for keyword, spacing in spacings.items():
        if spacing is not None:
            setattr(ds, keyword, [f"{v / scale:.6g}" for v in spacing])
    spacing = spacings["PixelSpacing"]
    if spacing is not None:  # NM: each detector's plane has its own first pixel
        for detector in ds.get("DetectorInformationSequence") or []:
            _move_first_pixel(detector, spacing, scale, sop, required=False)
    _move_first_pixel(ds, spacing, scale, sop, required=True)


def _move_first_pixel(
    plane: Dataset, spacing: np.ndarray | None, scale: int, sop: str, *, required: bool
) -> None:
    """The first pixel's centre of a plane (ImagePositionPatient along its orientation) on the
    finer grid: half a new pixel from the edge instead of half an old one."""
    position = _numbers(plane, "ImagePositionPatient", 3, sop)
    if position is None:
        return
    orientation = _numbers(plane, "ImageOrientationPatient", 6, sop)
    if spacing is None or orientation is None:
        if not required:
            return
        missing = "PixelSpacing" if spacing is None else "ImageOrientationPatient"
        raise ImageDeclined(
            f"sop={sop}: ImagePositionPatient without {missing} (PS3.3 C.7.6.2); the first "
            "pixel of the super-resolution grid cannot be placed"
        )
    old_row_spacing, old_col_spacing = spacing
    new_row_spacing, new_col_spacing = old_row_spacing / scale, old_col_spacing / scale
    # Row direction (first 3 cosines) advances one column: spacing PixelSpacing[1].
    shift = (new_col_spacing - old_col_spacing) / 2 * orientation[:3]
    shift += (new_row_spacing - old_row_spacing) / 2 * orientation[3:]
    plane.ImagePositionPatient = [f"{v:.6f}".rstrip("0").rstrip(".") for v in position + shift]


def _ultrasound_regions(ds: Dataset, scale: int) -> None:
    """Ultrasound calibration regions (PS3.3 C.8.5.5) onto the finer grid: their 0-based pixel
    bounds widened to whole blocks, the reference pixel to its block's centre, and the
    physical size of a pixel divided (else a distance measured on the derived image is scale
    times too long)."""
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        for keyword in ("RegionLocationMinX0", "RegionLocationMinY0"):
            if region.get(keyword) not in (None, ""):
                setattr(region, keyword, int(region[keyword].value) * scale)
        for keyword in ("RegionLocationMaxX1", "RegionLocationMaxY1"):
            if region.get(keyword) not in (None, ""):
                setattr(region, keyword, (int(region[keyword].value) + 1) * scale - 1)
        for keyword in ("ReferencePixelX0", "ReferencePixelY0"):
            if region.get(keyword) not in (None, ""):
                setattr(region, keyword, round((int(region[keyword].value) + 0.5) * scale - 0.5))
        for keyword in ("PhysicalDeltaX", "PhysicalDeltaY"):
            if region.get(keyword) not in (None, ""):
                setattr(region, keyword, float(region[keyword].value) / scale)


def _require(source: Dataset) -> None:
    sop = source.get("SOPInstanceUID", "(no SOPInstanceUID)")
    for keyword in _REQUIRED:
        if not source.get(keyword):
            raise ImageDeclined(
                f"sop={sop}: {keyword} is missing or empty; a derived image cannot be built "
                "without it (type 1, PS3.3 C.12.1 / C.7.2.1 / C.7.3.1 / C.7.6.3)"
            )


def _remove_private_elements(ds: Dataset) -> None:
    """Every private element of `ds`, in its sequences' items too, removed. pydicom's
    `remove_private_tags` walks the dataset and so decodes every element (~1.6 ms of a 512² CT
    image's ~9 ms derivation); this looks at the tags, and decodes only the sequences."""
    for tag in [tag for tag in ds.keys() if tag.is_private]:  # noqa: SIM118 (keys: no decoding)
        del ds[tag]
    for tag in list(ds.keys()):
        if getattr(ds.get_item(tag), "VR", None) == "SQ" or _dictionary_vr(tag) == "SQ":
            for item in ds[tag].value or []:
                _remove_private_elements(item)


def _dictionary_vr(tag: BaseTag) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:  # not in the dictionary: its own VR says whether it is a sequence
        return None


def derived_instance(
    source: Dataset,
    stored: np.ndarray,
    derivation: Derivation,
    *,
    comments: str,
) -> Dataset:
    """The derived dataset for `source` holding `stored` ((frames,) rows, columns, source dtype).

    The copy's Patient/Study/Series/Equipment modules are made to conform (`conformance.conform`),
    so a de-identified or non-conformant source still gives an image valid but for the identity
    values it shares with its source as they are (`conformance.IDENTITY`); what cannot be
    derived raises ImageDeclined naming the instance and the attribute.
    """
    _require(source)
    sop = str(source.SOPInstanceUID)
    frames = stored if stored.ndim == 3 else stored[None]
    ds = copy.deepcopy(source)
    if "PixelData" in ds:
        del ds.PixelData
    _remove_private_elements(ds)  # vendor pixel-processing tags no longer describe these pixels
    for keyword in _DROPPED:
        if keyword in ds:
            delattr(ds, keyword)
    if derivation.scale > 1:  # overlays are on the old grid
        # (keys, not elements: iterating a Dataset converts every element, invalid ones included)
        for tag in [tag for tag in ds.keys() if 0x6000 <= tag.group <= 0x60FF]:  # noqa: SIM118
            del ds[tag]
    else:
        separate_embedded_overlays(ds, source)
    conform(ds)
    shorten_decimal_strings(ds)

    ds.SOPInstanceUID = derived_instance_uid(
        derivation.uid_root, str(source.SOPInstanceUID), derivation.version
    )
    ds.SeriesInstanceUID = derivation.series_uid
    ds.SeriesNumber = derivation.series_number
    ds.SeriesDescription = derivation.series_description[:64]
    if "TimezoneOffsetFromUTC" in ds and _utc_offset(ds) is None:
        # Not an offset: the times written below are on the node's clock, which a copy of it
        # would misstate (and the SR copies it from here).
        del ds.TimezoneOffsetFromUTC
    _set_times(ds, _on_source_clock(derivation.processed_at, ds))
    ds.ImageType = _image_type(source)
    ds.DerivationDescription = derivation.description[:1024]
    ds.DerivationCodeSequence = [code_item(code) for code in derivation.codes]
    _references(ds, source, derivation)
    ds.ContributingEquipmentSequence = _equipment(ds, derivation)
    ds.ImageComments = comments[:10240]
    lossy_history(ds, source)

    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    if "NumberOfFrames" in source or len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    _geometry(ds, derivation.scale, sop)
    ds.PixelData = np.ascontiguousarray(frames, dtype=frames.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = f"DICOMNODE_{__version__}"[:16]
    # Last: removing private tags above went through every element, decoding each.
    copy_identity(ds, source)
    return ds
