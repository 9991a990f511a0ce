"""Value domains: stored ↔ modality values are bit-exact, declines say why, padding survives."""

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import JPEG2000Lossless

from dicomnode.dicom.codestream import declared_size
from dicomnode.errors import ImageDeclined
from dicomnode.imaging.pixels import (
    PixelDomain,
    pixel_domain,
    stored_values,
    to_modality,
    to_stored,
)
from tests.support.data import DATA, dicom_files, pydicom_test_files

# pydicom's corpus (compressed syntaxes included) and the real CT/MR images the repository holds
REAL = [str(p) for p in dicom_files(DATA)]
CORPUS = [str(p) for p in pydicom_test_files("*.dcm")] + REAL


def read(path: str) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(path)
    except (InvalidDicomError, OSError):
        return None  # files without a DICOM header are not images this layer ever sees


def test_round_trip_of_every_grayscale_image_is_bit_exact() -> None:
    exact, declined = [], []
    for path in CORPUS:
        ds = read(path)
        if ds is None:
            continue
        try:
            image = to_modality(ds)
        except ImageDeclined:
            declined.append(path)
            continue
        stored = stored_values(ds)
        back = to_stored(image.values, image.domain, image.padding, stored)
        assert back.dtype == stored.dtype.newbyteorder("="), path
        assert np.array_equal(back, stored), f"{path}: {np.sum(back != stored)} pixels differ"
        exact.append(Path(path).name)
    # pydicom's grayscale corpus, plus every real CT/MR image (Explicit and Implicit VR, 12-16 bit)
    assert len(REAL) >= 15
    assert len(exact) >= 15 + len(REAL), exact
    assert {
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "JPEGLSNearLossless_16.dcm",
    } <= set(exact)


def test_every_declined_image_gets_a_reason_naming_it() -> None:
    for path in CORPUS:
        ds = read(path)
        if ds is None:
            continue
        try:
            to_modality(ds)
        except ImageDeclined as exc:
            message = str(exc)
            assert message.startswith("sop="), message
            assert any(
                word in message
                for word in (
                    "grayscale",
                    "integer images",
                    "no pixel data",
                    "BitsAllocated",
                    "cannot be decoded",
                    "Big Endian",
                    "functional groups",
                    "code stream is",  # a damaged one: it says a size the header does not
                )
            ), message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("SC_rgb_small_odd.dcm", "PhotometricInterpretation=RGB"),
        ("rtdose.dcm", "BitsAllocated=32"),
        ("rtplan.dcm", "no pixel data"),
        ("MR_truncated.dcm", "pixel data cannot be decoded"),
    ],
)
def test_colour_float_missing_and_broken_pixels_are_declined(name: str, reason: str) -> None:
    with pytest.raises(ImageDeclined, match=reason):
        to_modality(dcmread(get_testdata_file(name)))


def test_ct_values_are_hounsfield_units() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    image = to_modality(ds)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert image.values.dtype == np.float32
    assert np.array_equal(image.values[0], expected.astype(np.float32))


def domain(**changes: object) -> PixelDomain:
    base = {
        "bits_allocated": 16,
        "bits_stored": 12,
        "signed": False,
        "slope": 1.0,
        "intercept": -1024.0,
        "photometric": "MONOCHROME2",
        "padding_value": None,
        "padding_limit": None,
    }
    return PixelDomain(**{**base, **changes})  # type: ignore[arg-type]


def test_values_beyond_bits_stored_are_clipped_and_nan_is_floored() -> None:
    d = domain()
    values = np.array([[[-5000.0, 0.0, 5000.0, np.nan]]], dtype=np.float32)
    stored = to_stored(values, d, np.zeros(values.shape, dtype=bool))
    assert stored.dtype == np.uint16
    assert stored.tolist() == [[[0, 1024, 4095, 0]]]


def test_signed_range_and_rounding_follow_the_rescale() -> None:
    d = domain(signed=True, bits_stored=16, slope=0.5, intercept=0.0)
    values = np.array([[[-20000.0, 1.24, 1.26, 20000.0]]])
    stored = to_stored(values, d, np.zeros(values.shape, dtype=bool))
    assert stored.dtype == np.int16
    assert stored.tolist() == [[[-32768, 2, 3, 32767]]]


def test_padding_pixels_are_restored_exactly_whatever_the_enhancement_did() -> None:
    d = domain(signed=True, bits_stored=16, padding_value=0x8000)  # -32768 as US bits
    stored = np.array([[[-32768, 100, 200]]], dtype=np.int16)
    image_values = stored.astype(np.float32) - 1024
    image_values[0, 0, 0] = 55.0  # an enhancement smeared the padding
    mask = np.array([[[True, False, False]]])
    back = to_stored(image_values, d, mask)
    assert back.tolist() == [[[-32768, 100, 200]]]


def test_padding_mask_covers_a_padding_range() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = 0, 100
    image = to_modality(ds)
    assert np.array_equal(image.padding[0], (ds.pixel_array >= 0) & (ds.pixel_array <= 100))


def test_a_cts_values_below_air_are_padding_declared_or_not() -> None:
    """Outside the reconstruction circle (-2048 HU here, no PixelPaddingValue); an MR's low
    values are just values."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelPaddingValue
    pixels = ds.pixel_array.copy()
    pixels[:, :20] = -1024  # stored: -2048 HU
    pixels[:, 20:30] = 0  # -1024 HU: air, not padding
    ds.PixelData = pixels.tobytes()
    padding = to_modality(ds).padding[0]
    assert padding[:, :20].all() and not padding[:, 20:].any()
    ds.Modality = "MR"
    assert not to_modality(ds).padding.any()


def test_monochrome1_is_marked_inverted() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert pixel_domain(ds).inverted


def _j2k_declaring(rows: int, columns: int) -> bytes:
    """The start of a JPEG 2000 code stream: SOC, then a SIZ segment for one component."""
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, columns, rows, 0, 0, columns, rows, 0, 0, 1)
    return b"\xff\x4f\xff\x51" + siz + bytes([15, 1, 1]) + b"\xff\xd9"


def test_a_code_stream_larger_than_its_header_says_is_declined_before_decoding() -> None:
    """A 3 KB stream of 30000 x 30000 pixels in a data set that said 64 x 64 took 5.4 GB to
    decode (and could take the node with it)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([_j2k_declaring(30000, 30000)])
    with pytest.raises(ImageDeclined, match=r"code stream is 30000 x 30000 pixels where Rows x"):
        to_modality(ds)


def test_the_size_a_code_stream_declares_is_read_from_each_kind() -> None:
    assert declared_size(_j2k_declaring(64, 80)) == (64, 80)
    for name in (
        "JPEG2000.dcm",
        "JPEG-lossy.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg.dcm",
    ):
        [path] = pydicom_test_files(name)
        ds = dcmread(path)
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert declared_size(frame) == (ds.Rows, ds.Columns), name
    assert declared_size(b"not a code stream") is None
