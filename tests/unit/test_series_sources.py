"""What a series' sources say before they are enhanced (pipeline/sources.py): its modality,
and what its images will take in memory."""

from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.db.records import SpooledInstance
from dicomnode.errors import SeriesTooLarge
from dicomnode.pipeline.sources import load_sources, modality_of
from tests.support.series import write_ct_series


def _spooled(path: Path) -> SpooledInstance:
    ds = dcmread(path, stop_before_pixels=True)
    return SpooledInstance(ds.SOPInstanceUID, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, path)


def test_a_report_first_in_the_series_does_not_make_its_images_another_modality(
    tmp_path: Path,
) -> None:
    """An SR sent in a CT series, first in UID order: the series was "modality SR not enabled"
    and none of its CT images was enhanced."""
    images = write_ct_series(tmp_path / "ct", 2, size=32)
    report = dcmread(images[0])
    report.Modality = "SR"
    report.save_as(tmp_path / "sr.dcm")
    inputs = [_spooled(tmp_path / "sr.dcm"), *map(_spooled, images)]
    assert modality_of(inputs) == "CT"
    assert modality_of(inputs[:1]) == "SR"  # only a report: what it is
    assert modality_of([]) is None


def test_a_multi_frame_image_counts_three_times_a_slice_against_max_series_mb(
    tmp_path: Path,
) -> None:
    """It goes through a method whole: a 500-frame XA took 4.3 GB where 1.5 GB was counted."""
    [path] = write_ct_series(tmp_path / "ct", 1, size=64)
    frames = dcmread(path)
    frames.NumberOfFrames = 4
    frames.PixelData = frames.PixelData * 4
    frames.save_as(tmp_path / "frames.dcm")
    pixels = 4 * 64 * 64
    _images, declined = load_sources([_spooled(tmp_path / "frames.dcm")], 0, pixels * 36)
    assert declined == ()  # at the limit: enhanced
    with pytest.raises(SeriesTooLarge, match="36 for a multi-frame image"):
        load_sources([_spooled(tmp_path / "frames.dcm")], 0, pixels * 36 - 1)
