"""Generated test series: real CT pixels in a multi-instance series of our own making.

The real CT data holds one slice per series; the network tests need a series of many instances,
so this builds one from a real slice the repository holds (`tests/data/`): fresh Study/Series/SOP
UIDs, one position per slice, and pixels that differ from slice to slice so a mix-up between
instances would show.
"""

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support.data import CT_AXIAL

CT_TEMPLATE = CT_AXIAL


def ct_template() -> Dataset:
    return dcmread(CT_TEMPLATE)


def write_ct_series(
    out_dir: Path,
    count: int,
    *,
    size: int | None = None,
    seed: int = 0,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0001",
) -> list[Path]:
    """Write `count` CT instances of one new series into `out_dir`; return their paths."""
    template = ct_template()
    base = template.pixel_array.astype(np.int32)
    if size is not None and base.shape != (size, size):
        reps = (-(-size // base.shape[0]), -(-size // base.shape[1]))
        base = np.tile(base, reps)[:size, :size]
    lo, hi = (-(2**15), 2**15 - 1) if template.PixelRepresentation else (0, 2**16 - 1)
    rng = np.random.default_rng(seed)
    study_uid, series_uid = generate_uid(), generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.SeriesNumber, ds.InstanceNumber = 901, index + 1
        ds.ImagePositionPatient = [-250.0, -250.0, float(index)]
        ds.SliceLocation = float(index)
        noise = rng.integers(-20, 21, size=base.shape)
        pixels = np.clip(np.roll(base, index, axis=1) + noise, lo, hi)
        dtype = np.int16 if template.PixelRepresentation else np.uint16
        ds.PixelData = pixels.astype(dtype).tobytes()
        ds.Rows, ds.Columns = pixels.shape
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in ds:
                del ds[keyword]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out_dir / f"CT{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sop_instance_uid(path: Path) -> str:
    """The SOP Instance UID of a DICOM file (header only)."""
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def series_instance_uid(path: Path) -> str:
    """The Series Instance UID of a DICOM file (header only)."""
    return str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
