"""Header fuzz: derived images and the metrics SR build and validate for every header allowed.

Real series arrive de-identified (type-2 attributes dropped or blanked), with non-conformant
values, odd geometry, multi-frame or unusual bit depths (issue 12). For each variant of a real CT
slice and of pydicom's MR_small the derived image (`derived_instance`) and the SR
(`metrics_report`) are built in memory, written, and checked with `dciodvfy`: no Error line
beyond those the source variant already has (a real source may carry errors of its own; the
derived file must add none). An image that cannot
be derived must be declined with a message naming the attribute, never crash, and never quote a
raw value (it may be PHI).
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from dicomnode.dicom import report as report_module
from dicomnode.dicom.derive import Derivation, derived_instance, derived_series_uid, derived_uid
from dicomnode.dicom.report import ImageMeasures, metrics_report
from dicomnode.errors import DicomNodeError
from dicomnode.imaging.metrics import ImageMetrics
from dicomnode.imaging.outcome import FrameGain, ImageOutcome, mean_gain
from dicomnode.imaging.pixels import to_modality, to_stored
from dicomnode.imaging.qa import QaVerdict
from dicomnode.registry import SRCNN
from tests.support.data import CT_HEAD_GE
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.series import write_ct_series

INVALID_DATE = "1970-01-01"  # ISO, not DA (PS3.5 6.2): the value seen in issue 12
JAPANESE_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"  # PS3.5 H.3.1, in ['', 'ISO 2022 IR 87']

# Type-2 (and 2C) attributes of the Patient, General Study, General Series, General Equipment
# and image modules of the CT and MR Image IODs (PS3.3 C.7.1.1, C.7.2.1, C.7.3.1, C.7.5.1,
# C.7.6.1, C.7.6.2, C.8.2.1, C.8.3.1).
TYPE2 = {
    "Patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "Study": ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
    "Series": ("SeriesNumber", "PatientPosition"),
    "Equipment": ("Manufacturer",),
    "Image": ("InstanceNumber", "SliceThickness"),
}
TYPE2_BY_MODALITY = {
    "CT": ("KVP", "AcquisitionNumber"),  # type 2 in the CT Image module, 3 elsewhere
    "MR": ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"),
}
# Type-3 attributes of the same modules (PS3.3 C.7.1.1, C.7.2.2, C.7.2.1, C.7.3.1, C.7.5.1,
# C.7.6.1, C.7.6.2).
TYPE3 = {
    "Patient": ("PatientIdentityRemoved", "OtherPatientIDsSequence", "PatientComments"),
    "Study": (
        "StudyDescription",
        "NameOfPhysiciansReadingStudy",
        "ProcedureCodeSequence",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "AdditionalPatientHistory",
    ),
    "Series": (
        "SeriesDate",
        "SeriesTime",
        "SeriesDescription",
        "ProtocolName",
        "OperatorsName",
        "BodyPartExamined",
        "Laterality",
    ),
    "Equipment": (
        "InstitutionName",
        "StationName",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "SoftwareVersions",
    ),
    "Image": (
        "AcquisitionDate",
        "AcquisitionTime",
        "ImageComments",
        "SliceLocation",
        "LossyImageCompression",
        "InstanceCreationDate",
    ),
}
ALL_TYPE2 = tuple(k for keywords in TYPE2.values() for k in keywords)
# What the objects we write must always carry, if only empty (PatientPosition is 2C: not here).
ALWAYS_IN_DERIVED = tuple(k for k in ALL_TYPE2 if k != "PatientPosition")
ALWAYS_IN_REPORT = TYPE2["Patient"] + TYPE2["Study"] + ("SeriesNumber", "InstanceNumber")


@dataclass(frozen=True)
class Variant:
    """One edit of a source header, and what must come of it."""

    name: str
    edit: Callable[[Dataset], None]
    scale: int = 1
    declined_by: str | None = None  # the attribute a decline must name; None: must build
    secret: str | None = None  # a raw invalid value no error may quote, nor a file but below
    # What the derived images and the SR must carry exactly as the source does, in memory and
    # as written: identity attributes (conformance.IDENTITY: the PACS files them by those),
    # invalid or not, and the character set.
    carried: tuple[str, ...] = ()


def remove(*keywords: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for keyword in keywords:
            if keyword in ds:
                del ds[keyword]

    return edit


def blank(*keywords: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for keyword in keywords:
            setattr(ds, keyword, [] if keyword.endswith("Sequence") else None)

    return edit


def assign(**values: object) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        with warnings.catch_warnings():  # pydicom warns on invalid values: that is the point
            warnings.simplefilter("ignore", UserWarning)
            for keyword, value in values.items():
                setattr(ds, keyword, value)

    return edit


def tilted(ds: Dataset) -> None:
    """A gantry tilted by 19°: the column direction leaves the axial plane (PS3.3 C.7.6.2.1.1)."""
    angle = np.radians(19.0)
    ds.GantryDetectorTilt = "19"
    ds.ImageOrientationPatient = [1, 0, 0, 0, f"{np.cos(angle):.7f}", f"{-np.sin(angle):.7f}"]


def bits(stored: int, signed: bool) -> Callable[[Dataset], None]:
    """The same image re-encoded with BitsStored `stored` and the given sign (PS3.3 C.7.6.3)."""

    def edit(ds: Dataset) -> None:
        pixels = ds.pixel_array.astype(np.int64)
        low = -(2 ** (stored - 1)) if signed else 0
        high = low + 2**stored - 1
        pixels = np.clip(pixels - pixels.min() + low, low, high)
        ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = stored, stored - 1, int(signed)
        remove("PixelPaddingValue", "SmallestImagePixelValue", "LargestImagePixelValue")(ds)

    return edit


def frames(count: int, functional_groups: bool = False) -> Callable[[Dataset], None]:
    """The image repeated as `count` frames (NumberOfFrames, PS3.3 C.7.6.6)."""

    def edit(ds: Dataset) -> None:
        pixels = ds.pixel_array
        ds.PixelData = np.stack([np.roll(pixels, i, axis=1) for i in range(count)]).tobytes()
        ds.NumberOfFrames = count
        if functional_groups:
            ds.PerFrameFunctionalGroupsSequence = [Dataset() for _ in range(count)]

    return edit


def per_attribute(modality: str) -> list[Variant]:
    """Each type-2 and type-3 attribute removed, then blanked, one at a time."""
    keywords = [k for group in (TYPE2, TYPE3) for ks in group.values() for k in ks]
    keywords += TYPE2_BY_MODALITY[modality]
    variants = [Variant(f"remove-{k}", remove(k)) for k in keywords]
    return variants + [Variant(f"blank-{k}", blank(k)) for k in keywords]


COMBINATIONS = [
    Variant("all-type2-removed", remove(*ALL_TYPE2)),
    Variant("all-type2-blanked", blank(*ALL_TYPE2)),
    Variant(
        "invalid-dates",
        assign(PatientBirthDate=INVALID_DATE, StudyDate=INVALID_DATE, SeriesDate=INVALID_DATE),
        secret=INVALID_DATE,
        carried=("PatientBirthDate", "StudyDate"),
    ),
    Variant("invalid-series-date", assign(SeriesDate=INVALID_DATE), secret=INVALID_DATE),
    Variant("invalid-patient-sex", assign(PatientSex="X"), carried=("PatientSex",)),
    Variant(
        "invalid-patient-name",
        assign(PatientName="Doe=Jane=X=Y"),
        secret="Doe=Jane=X=Y",
        carried=("PatientName",),
    ),
    Variant(
        "overlong-patient-id",
        assign(PatientID="P" * 70),
        secret="P" * 70,
        carried=("PatientID",),
    ),
    Variant("invalid-age", assign(PatientAge="45")),
    Variant(
        "japanese-iso-2022",
        assign(SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName=JAPANESE_NAME),
        carried=("PatientName", "SpecificCharacterSet"),
    ),
    Variant(
        "latin-1-with-extensions",
        assign(SpecificCharacterSet="ISO 2022 IR 100", PatientName="Müller^Jürgen"),
        carried=("PatientName", "SpecificCharacterSet"),
    ),
    Variant(
        "iso-ir-6",
        assign(SpecificCharacterSet="ISO_IR 6"),
        carried=("SpecificCharacterSet",),
    ),
    Variant(
        "invalid-study-time", assign(StudyTime="12:00"), secret="12:00", carried=("StudyTime",)
    ),
    Variant("overlong-study-description", assign(StudyDescription="S" * 80), secret="S" * 80),
    Variant("gantry-tilt", tilted),
    Variant("gantry-tilt-x2", tilted, scale=2),
    Variant("no-pixel-spacing", remove("PixelSpacing")),
    Variant("no-pixel-spacing-x2", remove("PixelSpacing"), scale=2, declined_by="PixelSpacing"),
    Variant("no-position", remove("ImagePositionPatient")),
    Variant("no-position-x2", remove("ImagePositionPatient"), scale=2),
    Variant(
        "no-orientation-x2",
        remove("ImageOrientationPatient"),
        scale=2,
        declined_by="ImageOrientationPatient",
    ),
    Variant("unsigned-12-bit", bits(12, signed=False)),
    Variant("signed-12-bit", bits(12, signed=True)),
    Variant("unsigned-16-bit-x2", bits(16, signed=False), scale=2),
    Variant("multi-frame", frames(3)),
    Variant("multi-frame-x2", frames(3), scale=2),
    Variant("functional-groups", frames(2, functional_groups=True), declined_by="C.7.6.16"),
    Variant(
        "functional-groups-x2",
        frames(2, functional_groups=True),
        scale=2,
        declined_by="C.7.6.16",
    ),
]


def derivation(source: Dataset, scale: int) -> Derivation:
    return Derivation(
        method="srcnn",
        version=f"fuzz-x{scale}",
        scale=scale,
        codes=tuple(SRCNN.codes(scale)),
        description="header fuzz",
        series_uid=derived_series_uid(str(source.SeriesInstanceUID), f"fuzz-x{scale}", None),
        series_number=1001,
        series_description="SRCNN header fuzz",
        uid_root=None,
        processed_at=datetime(2026, 11, 25, 12, 0, 0),
    )


def build(
    sources: Sequence[Dataset],
    scale: int,
    scored_frame: int | None = None,
    self_check_frames: tuple[FrameGain, ...] = (),
) -> tuple[list[Dataset], Dataset]:
    """Derived images (stored values upsampled by `scale`, nearest neighbour) and their SR,
    each image's outcome naming `scored_frame` (and the self-check's frames, if given)."""
    how = derivation(sources[0], scale)
    derived, measures = [], []
    for source in sources:
        image = to_modality(source)
        block = np.ones((1, scale, scale))
        stored = to_stored(
            np.kron(image.values, block), image.domain, np.kron(image.padding, block) > 0
        )
        ds = derived_instance(source, stored, how, comments="fuzz")
        derived.append(ds)
        outcome = ImageOutcome(
            str(source.SOPInstanceUID),
            str(ds.SOPInstanceUID),
            ImageMetrics(40.0, 0.99, 1000.0),
            mean_gain(self_check_frames),
            QaVerdict("ok", ()),
            scored_frame=scored_frame,
            self_check_frames=self_check_frames,
        )
        measures.append(ImageMeasures(ds, source, outcome))
    report = metrics_report(
        measures,
        series_uid=derived_uid(None, "fuzz-report-series", how.series_uid),
        series_number=2001,
        sop_uid=derived_uid(None, "fuzz-report", how.series_uid),
        description="Metrics header fuzz",
    )
    return derived, report


def check(sources: Sequence[Dataset], variant: Variant, out: Path) -> None:
    """Build, write and validate; or check the decline names the attribute."""
    out.mkdir(parents=True, exist_ok=True)
    source_errors: set[str] = set()
    for index, source in enumerate(sources):
        path = out / f"source-{index}.dcm"
        source.save_as(path, enforce_file_format=True)
        source_errors |= dciodvfy_errors(path)
    try:
        derived, report = build(sources, variant.scale)
    except DicomNodeError as exc:
        assert variant.declined_by is not None, f"{variant.name} declined: {exc}"
        assert variant.declined_by in str(exc)
        assert str(sources[0].SOPInstanceUID) in str(exc)
        assert variant.secret is None or variant.secret not in str(exc)
        return
    assert variant.declined_by is None, f"{variant.name} built; expected a decline"
    written = []
    for index, ds in enumerate(derived):
        written.append(out / f"derived-{index}.dcm")
        ds.save_as(written[-1], enforce_file_format=True)
    written.append(out / "report.dcm")
    report.save_as(written[-1], enforce_file_format=True)
    for path in written:
        added = dciodvfy_errors(path) - source_errors
        assert not added, f"{variant.name}: {path.name} adds {sorted(added)}"
        if variant.secret is not None and not variant.carried:
            assert variant.secret.encode() not in path.read_bytes(), path.name
    for keyword in variant.carried:
        expected = sources[0][keyword].value
        read_back = [dcmread(path)[keyword].value for path in written]
        in_memory = [ds[keyword].value for ds in [*derived, report]]
        assert in_memory == read_back == [expected] * len(written), keyword
    for source, ds in zip(sources, derived, strict=True):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.Rows == source.Rows * variant.scale
        assert [k for k in ALWAYS_IN_DERIVED if k not in ds] == []
    assert [k for k in ALWAYS_IN_REPORT if k not in report] == []


@pytest.fixture(scope="module")
def ct_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real CT slice (tests/data), cropped small to keep the run quick."""
    [path] = write_ct_series(tmp_path_factory.mktemp("ct"), 1, size=64)
    return path


MR_SMALL = Path(str(get_testdata_file("MR_small.dcm")))


def variant_source(path: Path, variant: Variant) -> Dataset:
    ds = dcmread(path)
    variant.edit(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.mark.parametrize("variant", per_attribute("CT") + COMBINATIONS, ids=lambda v: v.name)
def test_ct_variant_derives_and_validates(ct_slice: Path, variant: Variant, tmp_path: Path) -> None:
    check([variant_source(ct_slice, variant)], variant, tmp_path)


@pytest.mark.parametrize("variant", per_attribute("MR") + COMBINATIONS, ids=lambda v: v.name)
def test_mr_variant_derives_and_validates(variant: Variant, tmp_path: Path) -> None:
    check([variant_source(MR_SMALL, variant)], variant, tmp_path)


def test_real_de_identified_ge_head_ct_derives_and_validates(tmp_path: Path) -> None:
    """The series of issue 12: no PatientBirthDate/PatientSex, 18.5° tilt, as it was received."""
    sources = [dcmread(CT_HEAD_GE / name) for name in ("01.dcm", "14.dcm", "28.dcm")]
    assert "PatientBirthDate" not in sources[0]
    for scale in (1, 2):
        check(sources, Variant(f"ge-head-x{scale}", remove(), scale=scale), tmp_path / str(scale))


# Valid values of the copied modules that the derived image and the SR must keep as they are.
KEPT_IN_DERIVED = TYPE2["Patient"] + TYPE2["Study"] + TYPE3["Patient"] + TYPE3["Study"]
KEPT_IN_DERIVED += TYPE3["Equipment"] + ("Manufacturer",)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_valid_identity_is_copied_unchanged(ct_slice: Path, modality: str) -> None:
    source = dcmread(ct_slice if modality == "CT" else MR_SMALL)
    [derived], report = build([source], 1)
    kept = [k for k in KEPT_IN_DERIVED if k in source and not k.endswith("Sequence")]
    assert kept, "the source carries none of the attributes checked"
    assert {k: derived.get(k) for k in kept} == {k: source.get(k) for k in kept}
    in_report = [k for k in TYPE2["Patient"] + TYPE2["Study"] if k in source]
    assert {k: report.get(k) for k in in_report} == {k: source.get(k) for k in in_report}


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_identity_bytes_invalid_in_their_character_set_are_copied_byte_for_byte(
    ct_slice: Path, tmp_path: Path, syntax: str
) -> None:
    """A modality that declares UTF-8 and writes the patient's name in Latin-1: a PACS files
    the derived series and its SR under the bytes it got with the originals. Decoded, the name
    became 'M\ufffdller' (EF BF BD), another patient as far as a byte comparison goes. Kept,
    not decoded, the bytes warrant no warning (one per image and method filled a node's log)."""
    source = dcmread(ct_slice)
    source.file_meta.TransferSyntaxUID = syntax
    source.SpecificCharacterSet = "ISO_IR 192"
    source.PatientName = "Xuller^Hans"
    source.save_as(tmp_path / "source.dcm", enforce_file_format=True)
    latin1 = (tmp_path / "source.dcm").read_bytes().replace(b"Xuller^Hans", b"M\xfcller^Hans")
    (tmp_path / "source.dcm").write_bytes(latin1)
    read = dcmread(tmp_path / "source.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        [derived], report = build([read], 1)
    for name, ds in (("derived", derived), ("report", report)):
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        written = dcmread(tmp_path / f"{name}.dcm")
        assert written.SpecificCharacterSet == "ISO_IR 192", name
        assert written.get_item("PatientName").value.rstrip(b" ") == b"M\xfcller^Hans", name


@pytest.mark.parametrize(("scored_frame", "number"), [(None, 2), (0, 1)])
def test_the_report_of_a_multi_frame_image_names_the_frame_it_scored(
    ct_slice: Path, scored_frame: int | None, number: int
) -> None:
    # The frame scored (pipeline/scoring.py: the middle one unless it is blank) is named;
    # without a frame number the measurement would claim every frame (TID 1500). An outcome
    # recorded before outcomes named it was scored on the middle frame.
    source = dcmread(ct_slice)
    frames(3)(source)
    source.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage  # a multi-frame IOD
    _derived, report = build([source], 1, scored_frame)
    referenced = [
        int(item.ReferencedFrameNumber)
        for content in report.iterall()
        if content.keyword == "ReferencedSOPSequence"
        for item in content.value
        if "ReferencedFrameNumber" in item
    ]
    assert referenced and set(referenced) == {number}


def content_items(ds: Dataset) -> Iterator[Dataset]:
    """Every item of every sequence in `ds`, depth first."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield item
                yield from content_items(item)


def test_the_self_check_gain_of_a_multi_frame_image_names_the_frames_it_is_the_mean_of(
    ct_slice: Path,
) -> None:
    """PSNR and SSIM are of the scored frame; the self-check gain, the mean over the frames it
    restored, named them all (it named the scored frame alone, which it was not of)."""
    source = dcmread(ct_slice)
    frames(3)(source)
    source.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    checked = (FrameGain(0, 1.5), FrameGain(2, 0.5))
    _derived, report = build([source], 1, 1, checked)
    referenced: dict[str, list[int]] = {}
    for content in content_items(report):
        if content.get("ValueType") == "NUM":
            meaning = content.ConceptNameCodeSequence[0].CodeMeaning
            [image] = [item for item in content.ContentSequence if item.ValueType == "IMAGE"]
            numbers = image.ReferencedSOPSequence[0]["ReferencedFrameNumber"]
            values = numbers.value if numbers.VM > 1 else [numbers.value]
            referenced[meaning] = [int(n) for n in values]
    assert referenced == {
        "Peak signal-to-noise ratio versus source": [2],
        "Structural similarity versus source": [2],
        "Self-check PSNR gain over bicubic": [1, 3],
    }


def test_the_report_is_timed_as_its_images_on_the_sources_clock(ct_slice: Path) -> None:
    # highdicom stamps the node's local clock; the images carry the source's offset (PS3.3
    # C.12.1.1.8), and the report must read the same time as they do.
    source = dcmread(ct_slice)
    source.TimezoneOffsetFromUTC = "-0500"
    [derived], report = build([source], 1)  # processed 2026-11-25 12:00 on the node's clock
    assert report.TimezoneOffsetFromUTC == derived.TimezoneOffsetFromUTC == "-0500"
    for pair in ("Series", "Content", "InstanceCreation"):
        assert report[f"{pair}Date"].value == derived.ContentDate
        assert report[f"{pair}Time"].value == derived.ContentTime
    [processed] = [
        item for item in derived.ContributingEquipmentSequence if "ContributionDateTime" in item
    ]
    contributions = [
        item.ContributionDateTime
        for item in report.ContributingEquipmentSequence
        if "ContributionDateTime" in item
    ]
    assert contributions == [processed.ContributionDateTime]  # highdicom's own item


def test_the_report_is_the_document_highdicom_builds_from_all_its_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The document is built around the first image's group and the whole tree put in after
    (`report._outline`): byte for byte what highdicom's constructor gives with every group."""
    sources = [dcmread(CT_HEAD_GE / name) for name in ("01.dcm", "14.dcm", "28.dcm")]
    fast_images, fast = build(sources, 1)
    monkeypatch.setattr(report_module, "_outline", report_module._measurement_report)
    slow_images, slow = build(sources, 1)
    assert [ds.SOPInstanceUID for ds in fast_images] == [ds.SOPInstanceUID for ds in slow_images]
    assert type(fast) is Dataset
    groups = [
        item
        for item in fast.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "126010"  # Imaging Measurements
    ]
    assert len(groups) == 1 and len(groups[0].ContentSequence) == len(sources)
    assert written(fast) == written(slow)


def written(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_empty_optional_sequences_of_the_source_are_not_copied(
    ct_slice: Path, tmp_path: Path
) -> None:
    """A type-3 sequence without items (a source's empty ProcedureCodeSequence) is an error
    dciodvfy reports ("Bad Sequence number of Items 0"); it is left out of what we write, where
    an empty type-2 one (unknown) stays."""
    source = dcmread(ct_slice)
    source.ProcedureCodeSequence = []
    source.OtherPatientIDsSequence = []
    derived, report = build([source], 1)
    for ds in [*derived, report]:
        assert "ProcedureCodeSequence" not in ds
        assert "OtherPatientIDsSequence" not in ds
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert not [e for e in dciodvfy_errors(path) if "Sequence number of Items 0" in e]


@pytest.mark.parametrize("coded", [True, False], ids=["with its code sequence", "alone"])
def test_an_empty_deidentification_method_is_mended_as_its_condition_says(
    ct_slice: Path, tmp_path: Path, coded: bool
) -> None:
    """DeidentificationMethod is type 1C: with PatientIdentityRemoved YES and no code
    sequence it must have a value, and nothing knows it but the source, which left it empty
    (the GE head CT here): it says so; beside the code sequence an empty one goes. Either way
    every derived image and the SR failed dciodvfy with it; a value the source gives is copied."""
    source = dcmread(ct_slice)
    if not coded:
        del source.DeidentificationMethodCodeSequence
    given = source.DeidentificationMethod
    source.DeidentificationMethod = ""
    derived, report = build([source], 1)
    for ds in [*derived, report]:
        if coded:
            assert "DeidentificationMethod" not in ds
        else:
            assert ds.DeidentificationMethod == "unknown: the source does not name it"
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert not [e for e in dciodvfy_errors(path) if "DeidentificationMethod" in e]
    source.DeidentificationMethod = given
    derived, report = build([source], 1)
    assert {ds.DeidentificationMethod for ds in [*derived, report]} == {given}
