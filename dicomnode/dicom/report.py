"""The metrics of one derived series as a TID 1500 Measurement Report (Comprehensive SR).

One measurement group per derived image (its SourceImageForMeasurementGroup is the derived image;
each measurement also references the source image): PSNR (UCUM dB) and SSIM (UCUM 1) of the
derived image against its source, the self-check gain over bicubic (dB), and the QA verdict as a
qualitative evaluation. PSNR, SSIM and the verdict have no standard codes, so they use the
private scheme `99DCMNODE`, declared in CodingSchemeIdentificationSequence (PS3.3 C.12.1.1.2).
Built with highdicom, which enforces the template. The SR's Patient and Study modules are copied
from the first derived image, made to conform first (`conformance.conformant_header`): highdicom
needs their type-2 attributes present and valid, and a de-identified source lacks some. The
patient's and study's identity values are then put back exactly as the images carry them.
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage

from dicomnode import __version__
from dicomnode.dicom.conformance import IDENTITY, conformant_header, copy_identity
from dicomnode.dicom.derive import MANUFACTURER, derived_uid
from dicomnode.errors import ImageDeclined, ReportNotBuilt, first_line
from dicomnode.imaging.outcome import ImageOutcome
from dicomnode.warning_subject import user_warnings_ignored

SCHEME = "99DCMNODE"
PROCEDURE = CodedConcept("ENHANCE", SCHEME, "Image enhancement with quality assessment")
PSNR = CodedConcept("PSNR", SCHEME, "Peak signal-to-noise ratio versus source")
SSIM = CodedConcept("SSIM", SCHEME, "Structural similarity versus source")
SELF_CHECK_GAIN = CodedConcept("SCGAIN", SCHEME, "Self-check PSNR gain over bicubic")
QA_VERDICT = CodedConcept("QA", SCHEME, "Enhancement QA verdict")
VERDICTS = {
    "ok": CodedConcept("QAOK", SCHEME, "QA ok"),
    "warn": CodedConcept("QAWARN", SCHEME, "QA warning"),
    "fail": CodedConcept("QAFAIL", SCHEME, "QA failed"),
}
DECIBEL = CodedConcept("dB", "UCUM", "decibel")
UNITLESS = CodedConcept("1", "UCUM", "no units")


@dataclass(frozen=True)
class ImageMeasures:
    """One derived image, its source and what was measured on it."""

    derived: Dataset
    source: Dataset
    outcome: ImageOutcome


def _scored_frame(measures: ImageMeasures) -> list[int] | None:
    """The frame a multi-frame image was scored on (`SourceImage.scored_frame`: the middle one
    unless it is blank), for the references to say so; None for a single frame, or an image
    whose IOD has no frames to name (highdicom refuses frame numbers there)."""
    source = measures.source
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames < 2:
        return None
    try:
        hd.sr.SourceImageForMeasurement.from_source_image(source, [1])
    except TypeError:
        return None
    scored = measures.outcome.scored_frame
    return [(frames // 2 if scored is None else scored) + 1]


def _group(
    index: int, measures: ImageMeasures, series_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    scored = _scored_frame(measures)
    source_ref = [hd.sr.SourceImageForMeasurement.from_source_image(measures.source, scored)]
    outcome = measures.outcome
    values = [
        (PSNR, outcome.fidelity.psnr_db, DECIBEL, source_ref),
        (SSIM, outcome.fidelity.ssim, UNITLESS, source_ref),
    ]
    if outcome.self_check_gain_db is not None:
        # The mean over the frames the self-check restored, which it names (the scored one
        # where it restored that one alone).
        checked = [frame.frame + 1 for frame in outcome.self_check_frames]
        checked_ref = source_ref
        if checked and scored is not None:
            checked_ref = [
                hd.sr.SourceImageForMeasurement.from_source_image(measures.source, checked)
            ]
        values.append((SELF_CHECK_GAIN, outcome.self_check_gain_db, DECIBEL, checked_ref))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(None, "tracking", series_uid, str(index)),
            identifier=f"image {index + 1}",
        ),
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(measures.derived, scored)
        ],
        measurements=[
            hd.sr.Measurement(
                name=name, value=round(value, 4), unit=unit, referenced_images=referenced
            )
            for name, value, unit, referenced in values
            if math.isfinite(value)  # identical images: PSNR is infinite, not reportable
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=QA_VERDICT, value=VERDICTS[outcome.qa.verdict])
        ],
    )


def metrics_report(
    images: Sequence[ImageMeasures],
    *,
    series_uid: str,
    series_number: int,
    sop_uid: str,
    description: str,
    predecessors: Sequence[str] = (),
) -> Dataset:
    """The Comprehensive SR for one derived series (sent after its images). A value highdicom
    refuses raises ReportNotBuilt (the same input would fail every retry). `predecessors`: the
    SOP Instance UIDs of reports of the same series made before, of fewer images (the series
    grew since), named in its PredecessorDocumentsSequence: the PACS keeps those beside it, and
    this says which one replaces them."""
    if not images:
        raise ValueError("a metrics report needs at least one image")
    with _refusals_reported(images[0].derived):
        evidence = _evidence(images)  # first: it checks every image can be referenced
        _labelled_utf8(evidence[0])
        report = _measurement_report(images, series_uid)
        # highdicom warns about unusual PatientName forms *quoting the name*: that is PHI, and
        # it must not reach an operator's log.
        with user_warnings_ignored():
            outline = _outline(images, series_uid)
            earlier = [_earlier_report(evidence[0], series_uid, uid) for uid in predecessors]
            sr = _comprehensive_sr(
                evidence, outline, series_uid, series_number, sop_uid, description, earlier
            )
        sr = _with_content(sr, report)
    _same_character_set(sr, images[0].derived)
    copy_identity(sr, images[0].derived)  # as its images carry it, invalid or not
    _on_the_images_clock(sr, images[0].derived)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "dicomnode enhancement metrics"
    scheme.CodingSchemeResponsibleOrganization = "dicomnode project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


@contextmanager
def _refusals_reported(image: Dataset) -> Iterator[None]:
    """highdicom's ValueError/TypeError (it names the argument and the rule broken) as
    ReportNotBuilt, whose message quotes no identity value of `image`."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        why = _without_identity(first_line(exc), image)
        raise ReportNotBuilt(f"highdicom refused the metrics SR: {why}") from exc


def _without_identity(message: str, image: Dataset) -> str:
    """`message` with the patient's and study's identity values (which a library's message may
    quote) replaced by their keyword: it goes to the job's details and the log."""
    for keyword in sorted(IDENTITY):
        try:
            value = str(image.get(keyword, "") or "")
        except Exception:  # a value that cannot even be read is not in the message either
            continue
        if len(value) > 1:
            message = message.replace(value, f"<{keyword}>")
    return message


def _labelled_utf8(header: Dataset) -> None:
    """highdicom takes only some Specific Character Set values: not the ISO 2022 combinations
    of Japanese and Korean sites (['', 'ISO 2022 IR 87']), nor ISO_IR 6. The header's text is
    decoded in its own character set first, then labelled UTF-8, which holds any of it. Bytes
    that do not decode (text sent in another character set than it says) are replaced without a
    warning: the SR's identity is copied from its images as stored (`copy_identity`), and its
    other text (a study description, say) was replaced alike in the derived image, whose
    writing said so."""
    with user_warnings_ignored():
        header.decode()
    header.SpecificCharacterSet = "ISO_IR 192"


def _same_character_set(sr: Dataset, image: Dataset) -> None:
    """The SR is written in its images' character set (its own text is ASCII, which all hold)."""
    if "SpecificCharacterSet" in image:
        sr.SpecificCharacterSet = image.SpecificCharacterSet
    elif "SpecificCharacterSet" in sr:
        del sr.SpecificCharacterSet


def _on_the_images_clock(sr: Dataset, image: Dataset) -> None:
    """The SR's dates and times are its images' (their processing time, on the source's clock,
    with its TimezoneOffsetFromUTC: PS3.3 C.12.1.1.8), its Contribution DateTime too (highdicom
    lists itself as processing equipment). highdicom stamps the node's local clock, which in a
    UTC container would put a +0100 study's report an hour off its images."""
    if "TimezoneOffsetFromUTC" in image:
        sr.TimezoneOffsetFromUTC = image.TimezoneOffsetFromUTC
    sr.SeriesDate = sr.ContentDate = sr.InstanceCreationDate = image.ContentDate
    sr.SeriesTime = sr.ContentTime = sr.InstanceCreationTime = image.ContentTime
    for equipment in sr.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = f"{image.ContentDate}{image.ContentTime}"


def _earlier_report(image: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    """What a PredecessorDocumentsSequence item names of a report made before: it was made in
    the same study and report series, as a Comprehensive SR."""
    earlier = Dataset()
    earlier.StudyInstanceUID = image.StudyInstanceUID
    earlier.SeriesInstanceUID = series_uid
    earlier.SOPClassUID = ComprehensiveSRStorage
    earlier.SOPInstanceUID = sop_uid
    return earlier


def _reference(ds: Dataset) -> Dataset:
    """The four UIDs highdicom files an evidence item by (PS3.3 C.17.2.1), nothing else."""
    item = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            sop = ds.get("SOPInstanceUID", "(no SOPInstanceUID)")
            raise ImageDeclined(f"sop={sop}: {keyword} is missing; the SR cannot reference it")
        setattr(item, keyword, ds[keyword].value)
    return item


def _evidence(images: Sequence[ImageMeasures]) -> list[Dataset]:
    """Derived then source images; the first, whose Patient/Study modules the SR copies, as a
    conformant header, the others as bare references (never the callers' datasets)."""
    first = conformant_header(images[0].derived)
    rest = [m.derived for m in images[1:]] + [m.source for m in images]
    return [first, *(_reference(ds) for ds in rest)]


def _measurement_report(
    images: Sequence[ImageMeasures], series_uid: str
) -> hd.sr.MeasurementReport:
    """TID 1500 with a group for each image; highdicom checks each item as it builds it."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid(None, "observer", MANUFACTURER),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=f"dicomnode {__version__}",
        ),
    )
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=[_group(i, m, series_uid) for i, m in enumerate(images)],
    )


def _outline(images: Sequence[ImageMeasures], series_uid: str) -> hd.sr.MeasurementReport:
    """The report as it would be for the first image alone: what the document is built around.

    highdicom's document constructor goes over the whole content tree three times: a deep copy
    it parses back into content items, and two searches (the evidence every reference must be
    in; content its SR class does not allow). For 300 images that is ~3 s on the job's
    critical path, for a tree highdicom built and checked item by item a moment before. So the
    document is built around this outline and the whole tree put in after (`_with_content`).
    Nothing else the constructor writes depends on the content: the evidence sequences list
    every evidence item, referenced or not, and the groups reference only images `_evidence`
    lists. A test holds the result to highdicom's own, byte for byte.
    """
    return _measurement_report(images[:1], series_uid)


def _with_content(document: hd.sr.ComprehensiveSR, report: hd.sr.MeasurementReport) -> Dataset:
    """The document as a plain dataset, with the whole report's tree as its content (the root
    item's other attributes are the outline's, the same for any number of groups). A plain
    dataset, because highdicom's object would still hold its parsed view of the outline."""
    plain = Dataset(document)
    plain.file_meta = document.file_meta
    plain.ContentSequence = report[0].ContentSequence
    return plain


def _comprehensive_sr(
    evidence: list[Dataset],
    content: hd.sr.MeasurementReport,
    series_uid: str,
    series_number: int,
    sop_uid: str,
    description: str,
    earlier: Sequence[Dataset],
) -> hd.sr.ComprehensiveSR:
    return hd.sr.ComprehensiveSR(
        evidence=evidence,
        previous_versions=earlier or None,
        content=content,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=description[:64],
    )
