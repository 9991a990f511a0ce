"""A job holds its series in memory: `enhance.max_series_mb` bounds that (loading stops at the
first image past it, told from its header before it is decoded), and a method's working copies
are bounded per call (`STACK_PIXELS`), whatever the series' length."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless

from dicomnode.config import Settings
from dicomnode.db import SpooledInstance
from dicomnode.errors import SeriesTooLarge
from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.enhance import BaselineMethod
from dicomnode.imaging.outcome import TOO_LARGE
from dicomnode.pipeline import enhancement, sources
from dicomnode.pipeline.sources import JOB_BYTES_PER_PIXEL, load_sources
from tests.support.series import series_instance_uid, write_ct_series

SLICE_BYTES = 512 * 512 * JOB_BYTES_PER_PIXEL  # 3 MB


def spooled(paths: list[Path]) -> list[SpooledInstance]:
    found = []
    for path in paths:
        header = dcmread(path, stop_before_pixels=True)
        syntax = header.file_meta.TransferSyntaxUID
        found.append(SpooledInstance(header.SOPInstanceUID, header.SOPClassUID, syntax, path))
    return found


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SOP Instance UIDs `load_sources` decodes, in order."""
    calls: list[str] = []
    decode = sources.to_modality

    def counted(dataset):  # type: ignore[no-untyped-def]
        calls.append(str(dataset.SOPInstanceUID))
        return decode(dataset)

    monkeypatch.setattr(sources, "to_modality", counted)
    return calls


def test_loading_stops_before_decoding_the_first_image_past_the_bound(
    tmp_path: Path, decoded: list[str]
) -> None:
    paths = write_ct_series(tmp_path, 5)
    with pytest.raises(SeriesTooLarge) as raised:
        load_sources(spooled(paths), max_series_bytes=10 * 2**20)  # 3 slices fit, not 4
    assert str(raised.value).startswith(
        f"{TOO_LARGE}: series={series_instance_uid(paths[0])}, 5 instances, more than "
        "enhance.max_series_mb=10 MB in memory"
    )
    assert len(decoded) == 3
    images, declined = load_sources(spooled(paths), max_series_bytes=0)  # 0: no limit
    assert len(images) == 5 and declined == ()


def test_a_compressed_image_counts_as_its_header_says_it_decodes(
    tmp_path: Path, decoded: list[str]
) -> None:
    """A few KB of RLE (or a JPEG) may decode to far more: what the decoder would make of it
    counts, before it is made."""
    [path] = write_ct_series(tmp_path, 1)
    dataset = dcmread(path)
    dataset.compress(RLELossless)
    dataset.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < SLICE_BYTES / 6
    with pytest.raises(SeriesTooLarge):
        load_sources(spooled([path]), max_series_bytes=SLICE_BYTES - 1)
    assert decoded == []
    [image], _ = load_sources(spooled([path]), max_series_bytes=SLICE_BYTES)
    assert image.image.values.shape == (1, 512, 512)


def test_a_header_that_lies_declines_its_image_not_the_series(tmp_path: Path) -> None:
    """65535 x 65535 rows and columns over a slice's bytes (50 GB as the header says it): the
    image's own reason, as without the bound; the others load."""
    paths = write_ct_series(tmp_path, 3)
    liar = dcmread(paths[1])
    liar.Rows = liar.Columns = 65535
    liar.save_as(paths[1], enforce_file_format=True)
    images, declined = load_sources(spooled(paths), max_series_bytes=10 * 2**20)
    assert len(images) == 2
    [(sop, reason)] = [(item.sop, item.reason) for item in declined]
    assert sop == str(liar.SOPInstanceUID) and TOO_LARGE not in reason


def test_a_method_without_its_own_batch_gets_bounded_stacks(tmp_path: Path) -> None:
    """The baseline once took the whole series in one call (~21 bytes of copies per pixel)."""
    images, _ = load_sources(spooled(write_ct_series(tmp_path, 20)))
    stacks = list(enhancement._stacks(images, BaselineMethod(BaselineParams())))
    per_stack = enhancement.STACK_PIXELS // (512 * 512)
    assert [len(stack) for stack in stacks] == [per_stack, 20 - per_stack]
    assert sorted(np.concatenate(stacks)) == list(range(20))


def test_a_series_of_a_modality_not_enabled_is_not_read(tmp_path: Path, decoded: list[str]) -> None:
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, modalities=["MR"]))
    inputs = spooled(write_ct_series(tmp_path, 3))
    loaded = enhancement.load_series(inputs, settings)
    assert loaded.not_enhanced == "modality CT not enabled" and decoded == []
    output = enhancement.enhance_series(1, inputs, settings, lambda modality: [], print, loaded)
    assert output.outcome.status == "skipped: modality CT not enabled"
    assert output.unenhanced == {item.sop_instance_uid for item in inputs}  # they go unchanged
