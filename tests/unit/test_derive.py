"""Derived instances: identity, DERIVED type, references and super-resolution geometry."""

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSNearLossless,
    PositronEmissionTomographyImageStorage,
)

from dicomnode.dicom.derive import (
    Derivation,
    derived_instance,
    derived_series_uid,
    processed_by_dicomnode,
)
from dicomnode.errors import ImageDeclined
from dicomnode.imaging.pixels import to_modality, to_stored
from dicomnode.registry import SRCNN
from tests.support.data import pydicom_test_files
from tests.support.series import CT_TEMPLATE


def derivation(scale: int, version: str = "srcnn-x1-abc") -> Derivation:
    source = dcmread(CT_TEMPLATE)
    return Derivation(
        method="srcnn",
        version=version,
        scale=scale,
        codes=tuple(SRCNN.codes(scale)),
        description="SRCNN super-resolution (9-1-5), model srcnn-x1-abc, scale 1; one view",
        series_uid=derived_series_uid(source.SeriesInstanceUID, version, None),
        series_number=1001,
        series_description="SRCNN test",
        uid_root=None,
        processed_at=datetime(2026, 11, 25, 12, 0, 0),
    )


def derive(scale: int, version: str = "srcnn-x1-abc"):  # type: ignore[no-untyped-def]
    source = dcmread(CT_TEMPLATE)
    image = to_modality(source)
    values = np.kron(image.values, np.ones((1, scale, scale), np.float32))
    padding = np.kron(image.padding, np.ones((1, scale, scale), bool))
    stored = to_stored(values, image.domain, padding)
    ds = derived_instance(
        source,
        stored,
        derivation(scale, version),
        comments="PSNR 40 dB",
    )
    return source, ds


def test_identity_is_new_deterministic_and_consistent() -> None:
    source, first = derive(1)
    _, again = derive(1)
    _, other_version = derive(1, "srcnn-x1-def")
    assert first.SOPInstanceUID == again.SOPInstanceUID != source.SOPInstanceUID
    assert other_version.SOPInstanceUID != first.SOPInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPClassUID == source.SOPClassUID
    assert first.StudyInstanceUID == source.StudyInstanceUID
    assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert len(first.SOPInstanceUID) <= 64


@pytest.mark.parametrize(
    ("sop_class", "image_type"),
    [
        (CTImageStorage, ["DERIVED", "SECONDARY", "OTHER"]),  # value 3 required
        (DigitalXRayImageStorageForPresentation, ["DERIVED", "SECONDARY"]),  # enumerated
        (PositronEmissionTomographyImageStorage, ["DERIVED", "PRIMARY"]),  # value 2 PRIMARY
    ],
)
def test_image_type_follows_what_the_iod_enumerates(sop_class: str, image_type: list[str]) -> None:
    """A source with two values of Image Type: DX's enumerated value 3 has no OTHER (dciodvfy:
    "Unrecognized enumerated value"), CT must have one; PET's value 2 is PRIMARY, derived too."""
    source = dcmread(CT_TEMPLATE)
    source.SOPClassUID = sop_class
    source.ImageType = ["ORIGINAL", "PRIMARY"]
    assert list(_derived_from(source).ImageType) == image_type


def test_image_type_derivation_and_references() -> None:
    source, ds = derive(1)
    assert list(ds.ImageType[:3]) == ["DERIVED", "SECONDARY", source.ImageType[2]]
    assert ds.DerivationCodeSequence[0].CodeValue == "113087"
    [item] = ds.SourceImageSequence
    assert item.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert item.SpatialLocationsPreserved == "YES"
    [series] = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    # C.12.2 lists what the image references elsewhere: its source, not the whole series.
    [instance] = series.ReferencedInstanceSequence
    assert instance.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == source.SOPClassUID
    purposes = [
        i.PurposeOfReferenceCodeSequence[0].CodeValue for i in ds.ContributingEquipmentSequence
    ]
    assert purposes == ["109101", "109102"]
    # ST, like DerivationDescription: whole (it was cut at 64 characters)
    assert ds.ContributingEquipmentSequence[1].ContributionDescription == ds.DerivationDescription
    assert "SmallestImagePixelValue" not in ds


def test_pixels_round_trip_unchanged_for_an_identity_enhancement() -> None:
    source, ds = derive(1)
    np.testing.assert_array_equal(ds.pixel_array, source.pixel_array)


def test_super_resolution_geometry() -> None:
    source, ds = derive(2)
    assert (ds.Rows, ds.Columns) == (source.Rows * 2, source.Columns * 2)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(
        [float(v) / 2 for v in source.PixelSpacing]
    )
    # The first pixel's centre moves by a quarter of the old spacing along both axes.
    orientation = np.array([float(v) for v in source.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in source.PixelSpacing)
    expected = (
        np.array([float(v) for v in source.ImagePositionPatient])
        - col_spacing / 4 * orientation[:3]
        - row_spacing / 4 * orientation[3:]
    )
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(expected, abs=1e-4)
    assert ds.SourceImageSequence[0].SpatialLocationsPreserved == "NO"
    assert ds.DerivationCodeSequence[0].CodeValue == "113085"


def test_display_shutters_move_with_the_pixels_onto_the_finer_grid() -> None:
    # PS3.3 C.7.6.11: edges are pixel columns and rows; left on the old grid, a viewer would
    # black out three quarters of a x2 image.
    source = dcmread(CT_TEMPLATE)
    source.ShutterShape = ["RECTANGULAR", "CIRCULAR"]
    source.ShutterLeftVerticalEdge, source.ShutterRightVerticalEdge = 10, 120
    source.ShutterUpperHorizontalEdge, source.ShutterLowerHorizontalEdge = 5, 100
    source.CenterOfCircularShutter, source.RadiusOfCircularShutter = [64, 32], 30
    image = to_modality(source)
    values = np.kron(image.values, np.ones((1, 2, 2), np.float32))
    padding = np.kron(image.padding, np.ones((1, 2, 2), bool))
    ds = derived_instance(
        source, to_stored(values, image.domain, padding), derivation(2), comments=""
    )
    assert (ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge) == (19, 240)
    assert (ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge) == (9, 200)
    assert list(ds.CenterOfCircularShutter) == [128, 64]
    assert ds.RadiusOfCircularShutter == 60


def test_a_subtractions_mask_shift_moves_onto_the_finer_grid() -> None:
    """MaskSubPixelShift is in pixels: at x2 a viewer's DSA registration was off by half."""
    source = dcmread(CT_TEMPLATE)
    mask = Dataset()
    mask.MaskOperation, mask.MaskSubPixelShift = "AVG_SUB", [1.5, -2.0]
    source.MaskSubtractionSequence = [mask]
    ds = _doubled(source)
    assert list(ds.MaskSubtractionSequence[0].MaskSubPixelShift) == [3.0, -4.0]
    mask.MaskSubPixelShift = 1.5  # one value: malformed, the image declined (not a crash)
    with pytest.raises(ImageDeclined, match=r"MaskSubPixelShift is not 2 decimal numbers"):
        _doubled(source)


def _doubled(source: Dataset) -> Dataset:
    """The x2 derived image of `source` for an enhancement that only repeats pixels."""
    image = to_modality(source)
    values = np.kron(image.values, np.ones((1, 2, 2), np.float32))
    padding = np.kron(image.padding, np.ones((1, 2, 2), bool))
    return derived_instance(
        source, to_stored(values, image.domain, padding), derivation(2), comments=""
    )


def test_ultrasound_calibration_moves_onto_the_finer_grid() -> None:
    """PS3.3 C.8.5.5: left on the old grid, a distance measured on a x2 image was twice too
    long (found with a US multi-frame through a node)."""
    source = dcmread(CT_TEMPLATE)
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 20, 10
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 219, 99
    region.ReferencePixelX0, region.ReferencePixelY0 = 120, 0
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.03
    source.SequenceOfUltrasoundRegions = [region]
    [moved] = _doubled(source).SequenceOfUltrasoundRegions
    assert (moved.RegionLocationMinX0, moved.RegionLocationMinY0) == (40, 20)
    assert (moved.RegionLocationMaxX1, moved.RegionLocationMaxY1) == (439, 199)
    assert (moved.ReferencePixelX0, moved.ReferencePixelY0) == (240, 0)
    assert (moved.PhysicalDeltaX, moved.PhysicalDeltaY) == pytest.approx((0.01, 0.015))


def test_each_nm_detectors_first_pixel_moves_like_the_images() -> None:
    source = dcmread(CT_TEMPLATE)
    detector = Dataset()
    detector.ImagePositionPatient = ["-140", "-140", "0"]
    detector.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    source.DetectorInformationSequence = [detector]
    row_spacing, col_spacing = (float(v) for v in source.PixelSpacing)
    [moved] = _doubled(source).DetectorInformationSequence
    expected = [-140 - col_spacing / 4, -140 - row_spacing / 4, 0]
    assert [float(v) for v in moved.ImagePositionPatient] == pytest.approx(expected, abs=1e-4)


def test_a_source_that_came_lossy_compressed_stays_marked_lossy() -> None:
    # PS3.3 C.7.6.1.1.5: the syntax it came in says so even without LossyImageCompression.
    source = dcmread(CT_TEMPLATE)
    image = to_modality(source)
    source.file_meta.TransferSyntaxUID = JPEGLSNearLossless  # the header as it would read
    if "LossyImageCompression" in source:
        del source.LossyImageCompression
    ds = derived_instance(
        source, to_stored(image.values, image.domain, image.padding), derivation(1), comments=""
    )
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_14495_1"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def _derived_from(source: Dataset) -> Dataset:
    """The derived image of `source` for an enhancement that changed nothing."""
    image = to_modality(source)
    stored = to_stored(image.values, image.domain, image.padding)
    return derived_instance(source, stored, derivation(1), comments="")


@pytest.mark.parametrize("lossy", [True, False])
def test_a_jpeg_2000_source_is_marked_lossy_by_its_wavelet(lossy: bool) -> None:
    """.91 may be lossy or lossless: without LossyImageCompression in the source, the 9-7
    irreversible wavelet of its code stream says lossy (PS3.3 C.7.6.1.1.5)."""
    source = dcmread(CT_TEMPLATE)
    source.LossyImageCompression = "00"
    if lossy:
        source.compress(JPEG2000, j2k_cr=[20], generate_instance_uid=False)
    else:  # the reversible code stream, as a sender may label it
        source.compress(JPEG2000Lossless, generate_instance_uid=False)
        source.file_meta.TransferSyntaxUID = JPEG2000
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in source:
            delattr(source, keyword)
    ds = _derived_from(source)
    assert ds.get("LossyImageCompression") == ("01" if lossy else None)
    assert ds.get("LossyImageCompressionMethod") == ("ISO_15444_1" if lossy else None)


def _with_embedded_overlay(position: int) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """A 12-bit source whose overlay (a marker) lies in bit `position` of its pixel data
    (PS3.3 C.9.2.1.1, the retired embedded form), with the stored values and the marker."""
    source = dcmread(CT_TEMPLATE)
    values = source.pixel_array.astype(np.int64)
    values = ((values - values.min()) * 4095 // np.ptp(values)).astype(np.uint16)
    marker = np.zeros(values.shape, bool)
    marker[20:60, 30:50] = True  # an "L"
    marker[50:60, 30:80] = True
    source.BitsStored, source.HighBit, source.PixelRepresentation = 12, 11, 0
    source.RescaleIntercept, source.RescaleSlope = 0, 1
    if "PixelPaddingValue" in source:
        del source.PixelPaddingValue
    raw = values | (marker.astype(np.uint16) << position) if position >= 12 else values
    source.PixelData = raw.astype("<u2").tobytes()
    source.add_new(0x60000010, "US", source.Rows)  # OverlayRows
    source.add_new(0x60000011, "US", source.Columns)
    source.add_new(0x60000040, "CS", "G")  # OverlayType
    source.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    source.add_new(0x60000100, "US", 16)  # OverlayBitsAllocated
    source.add_new(0x60000102, "US", position)  # OverlayBitPosition
    return source, values, marker


def test_an_overlay_embedded_in_the_pixels_high_bits_gets_overlay_data_of_its_own() -> None:
    """The derived pixels keep only the stored bits: the marker moves to OverlayData (before,
    the header still described an overlay in bit 12 whose bits were gone)."""
    source, values, marker = _with_embedded_overlay(12)
    ds = _derived_from(source)
    assert np.array_equal(ds.pixel_array, values)
    assert (ds[0x60000100].value, ds[0x60000102].value) == (1, 0)
    assert np.array_equal(ds.overlay_array(0x6000), marker.astype(np.uint8))
    assert ds[0x60000040].value == "G"


def test_an_embedded_overlay_is_described_as_the_frame_its_bits_are_taken_from() -> None:
    """The bits are the whole frame's: a header that said otherwise would cut or move the
    marker (half of it was lost with OverlayRows = Rows / 2)."""
    source, _, marker = _with_embedded_overlay(12)
    source[0x60000010].value = source.Rows // 2  # OverlayRows
    source[0x60000050].value = [5, 5]  # OverlayOrigin
    ds = _derived_from(source)
    assert (ds[0x60000010].value, ds[0x60000011].value) == (ds.Rows, ds.Columns)
    assert list(ds[0x60000050].value) == [1, 1]
    assert np.array_equal(ds.overlay_array(0x6000), marker.astype(np.uint8))


def test_an_overlay_said_to_be_in_the_stored_bits_is_removed() -> None:
    source, _, _ = _with_embedded_overlay(4)  # bit 4 is image data: no overlay to carry
    ds = _derived_from(source)
    assert not [tag for tag in ds.keys() if tag.group == 0x6000]  # noqa: SIM118


def test_what_described_the_source_as_encoded_created_or_signed_is_not_copied() -> None:
    source = dcmread(CT_TEMPLATE)
    source.ExtendedOffsetTable = b"\0" * 8
    source.ExtendedOffsetTableLengths = b"\0" * 8
    source.InstanceCreatorUID = "1.2.3.4"
    source.DigitalSignaturesSequence = [Dataset()]
    image = to_modality(source)
    ds = derived_instance(
        source, to_stored(image.values, image.domain, image.padding), derivation(1), comments=""
    )
    gone = (
        "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths",
        "InstanceCreatorUID",
        "DigitalSignaturesSequence",
    )
    assert [keyword for keyword in gone if keyword in ds] == []


@pytest.mark.parametrize("implicit_vr", [False, True])
def test_private_elements_are_not_copied_from_any_depth(tmp_path, implicit_vr: bool) -> None:
    """A vendor's private elements (its processing of the old pixels) are left out, at the top
    and in a public sequence's items, read from a file (not yet decoded) in either VR form; the
    public elements beside them, nested ones too, are kept."""
    source = dcmread(CT_TEMPLATE)
    block = source.private_block(0x0029, "ACME 1.1", create=True)
    block.add_new(0x10, "LO", "sharpened")
    block.add_new(0x11, "SQ", [Dataset()])
    request = Dataset()
    request.RequestedProcedureID = "RP1"
    request.private_block(0x0031, "ACME 1.1", create=True).add_new(0x01, "LO", "nested")
    source.RequestAttributesSequence = [request]
    path = tmp_path / "source.dcm"
    if implicit_vr:
        source.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    source.save_as(path, enforce_file_format=True)
    source = dcmread(path)
    image = to_modality(source)
    ds = derived_instance(
        source, to_stored(image.values, image.domain, image.padding), derivation(1), comments=""
    )
    private: list[str] = []
    ds.walk(lambda _, element: private.append(str(element.tag)) if element.tag.is_private else 0)
    assert private == []
    assert ds.RequestAttributesSequence[0].RequestedProcedureID == "RP1"


def test_a_big_endian_source_is_declined_naming_the_instance_and_the_syntax() -> None:
    [path] = pydicom_test_files("MR_small_bigendian.dcm")
    source = dcmread(path)
    with pytest.raises(ImageDeclined, match="Explicit VR Big Endian") as declined:
        to_modality(source)
    assert str(source.SOPInstanceUID) in str(declined.value)


@pytest.mark.parametrize("offset", ["+2500", "0100", "+0175", "-1300", "UTC"])
def test_a_source_offset_that_is_not_one_is_dropped_and_times_are_on_the_nodes_clock(
    offset: str,
) -> None:
    """A TimezoneOffsetFromUTC outside -1200 … +1400, or not "&ZZXX", says nothing of the times:
    the derived image is stamped on the node's clock and does not carry it. ("+2500" used to
    end the job with a ValueError; the others were copied beside node-clock times.)"""
    source = dcmread(CT_TEMPLATE)
    source.TimezoneOffsetFromUTC = offset
    image = to_modality(source)
    when = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    how = replace(derivation(1), processed_at=when)
    ds = derived_instance(
        source, to_stored(image.values, image.domain, image.padding), how, comments=""
    )
    local = when.astimezone()
    assert "TimezoneOffsetFromUTC" not in ds
    assert (ds.ContentDate, ds.ContentTime) == (local.strftime("%Y%m%d"), local.strftime("%H%M%S"))


def test_processing_times_are_written_on_the_sources_clock() -> None:
    # PS3.3 C.12.1.1.8: the copied TimezoneOffsetFromUTC applies to every time of the instance.
    source = dcmread(CT_TEMPLATE)
    source.TimezoneOffsetFromUTC = "+0100"
    image = to_modality(source)
    how = replace(derivation(1), processed_at=datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC))
    ds = derived_instance(
        source, to_stored(image.values, image.domain, image.padding), how, comments=""
    )
    assert (ds.SeriesDate, ds.SeriesTime, ds.ContentTime) == ("20261125", "130000", "130000")
    assert ds.TimezoneOffsetFromUTC == "+0100"
    [_acquired, processed] = ds.ContributingEquipmentSequence
    assert processed.ContributionDateTime == "20261125130000"


def test_a_derived_image_says_dicomnode_processed_it_and_its_source_does_not() -> None:
    source, derived = derive(1)
    assert processed_by_dicomnode(derived) and not processed_by_dicomnode(source)
    processing = derived.ContributingEquipmentSequence[1]
    processing.Manufacturer = "Other Vendor"
    assert not processed_by_dicomnode(derived)  # another vendor's processing is no loop
    processing.Manufacturer = "dicomnode"
    del processing.PurposeOfReferenceCodeSequence  # not said to be the processing equipment
    assert not processed_by_dicomnode(derived)


def test_decimal_strings_longer_than_the_standard_allows_are_shortened_in_the_copy() -> None:
    """A scanner's 17-character ImagePositionPatient made every derived image fail dciodvfy
    (PS3.5 6.2: DS holds at most 16); the copy holds the nearest value that fits, the source
    keeps its own."""
    source = dcmread(CT_TEMPLATE)
    source.ImagePositionPatient = ["-96.5729749755102", "-112.232398986816", "-77.7779350280762"]
    source.SliceThickness = "1.0000000000000001"
    derived = _derived_from(source)
    written = [str(value) for value in derived.ImagePositionPatient]
    assert all(len(text) <= 16 for text in written), written
    assert np.allclose(
        [float(v) for v in written],
        [-96.5729749755102, -112.232398986816, -77.7779350280762],
        rtol=1e-12,
    )
    assert str(derived.SliceThickness) == "1.0"
    assert str(source.ImagePositionPatient[0]) == "-96.5729749755102"
