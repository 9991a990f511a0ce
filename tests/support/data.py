"""The real DICOM files the repository holds for its tests (`tests/data/`, README there).

Tests read real images from here only, never from `../shared/data` (the training and evaluation
corpus, absent from a fresh clone), so a clone on its own runs every test with the same coverage.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"

# CT chest, one TCIA patient: two axial slices and a coronal reformat (one series each)
CT_CHEST = DATA / "ct-chest" / "A067967"
CT_AXIAL = CT_CHEST / "axial-19001006-028.dcm"
# CT abdomen, Philips, Implicit VR Little Endian, 12-bit with a rescale intercept
CT_BODY = DATA / "ct-body" / "Pancreas-CT-CB_001"
# CT head, GE, gantry tilt, a realistic de-identified header (issue 12)
CT_HEAD_GE = DATA / "ct-head-ge"
# MR T1w brain, 7 T: six consecutive slices of one series (one subject)
MR_T1 = DATA / "mr-brain-t1"
# MR T1 post-contrast, another subject and scanner, 12-bit: two slices of one series
MR_T1C = DATA / "mr-brain-t1c" / "PGBM-001"

CT_FOLDERS = (CT_CHEST, CT_BODY, CT_HEAD_GE)
MR_FOLDERS = (MR_T1, MR_T1C)


def dicom_files(*folders: Path) -> list[Path]:
    """The `.dcm` files under `folders`, in a stable order."""
    return sorted(p for folder in folders for p in folder.rglob("*.dcm"))


def pydicom_test_files(pattern: str = "*.dcm") -> list[Path]:
    """The test files pydicom ships in its wheel, matching `pattern`.

    Not `pydicom.data.get_testdata_files`: that also fetches pydicom's external test data from
    the network, and a test must neither download nor see a corpus that depends on the network.
    """
    from pydicom.data.data_manager import DATA_ROOT

    return sorted((Path(DATA_ROOT) / "test_files").glob(pattern))
