"""Bits above BitsStored (`imaging/unused_bits.py`): a sign or an embedded overlay may sit
there, and a padding pixel holds anything there; any other value there declines the image
instead of being dropped."""

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.errors import ImageDeclined
from dicomnode.imaging.pixels import to_modality


def _image(raw: np.ndarray, *, bits_stored: int = 12, **attributes: object) -> Dataset:
    """A native 16-bit CT image of `raw` (its dtype says signed or not) as the file holds it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if raw.dtype.kind == "i" else 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = raw.astype(raw.dtype.newbyteorder("<")).tobytes()
    return ds


def test_a_value_above_bits_stored_declines_the_image_naming_it() -> None:
    """Metal at a raw 6000 in a "12-bit" CT: its stored bits alone say 1904, soft tissue."""
    raw = np.array([[1000, 6000], [4095, 0]], dtype=np.uint16)
    ds = _image(raw)
    with pytest.raises(ImageDeclined) as declined:
        to_modality(ds)
    said = str(declined.value)
    assert f"sop={ds.SOPInstanceUID}" in said
    assert "1 pixels hold bits above BitsStored=12" in said and "raw values 6000..6000" in said
    # The header that describes the pixels keeps them.
    assert to_modality(_image(raw, bits_stored=16)).values.max() == 6000 - 1024


def test_a_signed_image_may_extend_its_sign_or_leave_zeros_above_it() -> None:
    sign_extended = np.array([[-10, 2047], [-2048, 0]], dtype=np.int16)
    zero_filled = (sign_extended.view(np.uint16) & 0x0FFF).view(np.int16)  # -10 as 0x0FF6
    for raw in (sign_extended, zero_filled):
        image = to_modality(_image(raw, RescaleIntercept=0))
        assert image.values[0].tolist() == [[-10, 2047], [-2048, 0]]
    stray = np.array([[0x1005, 0]], dtype=np.uint16).view(np.int16)  # bit 12 on a positive
    with pytest.raises(ImageDeclined, match="1 pixels hold bits above BitsStored=12"):
        to_modality(_image(stray))


def test_an_embedded_overlay_in_the_unused_bits_is_no_stray_value() -> None:
    raw = np.array([[1000 | 1 << 12, 1000], [20, 20 | 1 << 12]], dtype=np.uint16)
    ds = _image(raw)
    ds.add_new(0x60000010, "US", 2)  # OverlayRows
    ds.add_new(0x60000011, "US", 2)  # OverlayColumns
    ds.add_new(0x60000102, "US", 12)  # OverlayBitPosition: bit 12, no OverlayData
    assert to_modality(ds).values[0].tolist() == [[-24, -24], [-1004, -1004]]
    del ds[0x60000102]  # the same bits, no overlay declared there
    with pytest.raises(ImageDeclined, match="2 pixels hold bits above BitsStored=12"):
        to_modality(ds)


def test_padding_pixels_are_judged_by_their_stored_bits() -> None:
    """A PixelPaddingValue that its stored bits hold is padding whatever lies above them; one
    that needs more bits than BitsStored cannot be told from a stored value: declined, as
    before this check such pixels were read as their stored bits (a ring of 0 around the body)."""
    raw = np.array([[0x0000 | 1 << 12, 1000], [1200, 0]], dtype=np.uint16)
    image = to_modality(_image(raw, PixelPaddingValue=0))
    assert image.padding[0].tolist() == [[True, False], [False, True]]
    raw = np.array([[0xF000, 1000], [1200, 0xF000]], dtype=np.uint16)
    with pytest.raises(ImageDeclined, match=r"2 pixels .* \(raw values 61440\.\.61440\)"):
        to_modality(_image(raw, PixelPaddingValue=0xF000))
