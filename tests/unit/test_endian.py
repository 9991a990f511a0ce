"""A big endian data set turned little endian for a peer that does not take the retired syntax:
pixel data at its sample width (32 bits too), OW values inside sequences, AT and US values."""

from io import BytesIO

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom.dsutils import decode, encode

from dicomnode.dicom.endian import little_endian

PIXELS = [1, 2, 70000, 3]
LUT = [1, 2, 300]


def big_endian_file(bits: int) -> Dataset:
    """A 2x2 image of `bits`-bit samples with a Modality LUT, written and read big endian."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    values = [v % (1 << bits) for v in PIXELS]
    ds.add_new(0x7FE00010, "OW", np.array(values, f">u{bits // 8}").tobytes())
    lut = Dataset()
    lut.add_new(0x00283002, "US", [3, 0, 16])  # LUTDescriptor
    lut.add_new(0x00283006, "OW", np.array(LUT, ">u2").tobytes())  # LUTData
    lut.FrameIncrementPointer = 0x00181063  # AT
    ds.ModalityLUTSequence = Sequence([lut])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    written = BytesIO()
    dcmwrite(written, ds, enforce_file_format=True)
    written.seek(0)
    return dcmread(written)


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_big_endian_data_set_arrives_little_endian_with_every_value_intact(
    bits: int, syntax: str
) -> None:
    source = big_endian_file(bits)
    expected = source.pixel_array.ravel().tolist()
    converted = little_endian(source)
    assert converted.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    implicit = syntax == ImplicitVRLittleEndian
    # what pynetdicom puts on the wire for a little endian context, and a peer reads back
    received = decode(BytesIO(encode(converted, implicit, True)), implicit, True)
    received.file_meta = FileMetaDataset()
    received.file_meta.TransferSyntaxUID = syntax
    assert received.pixel_array.ravel().tolist() == expected
    assert expected == [v % (1 << bits) for v in PIXELS]
    lut = received.ModalityLUTSequence[0]
    assert np.frombuffer(lut[0x00283006].value, "<u2").tolist() == LUT
    assert lut[0x00283002].value == [3, 0, 16]
    assert lut.FrameIncrementPointer == 0x00181063
