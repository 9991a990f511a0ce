"""The self-check of a series runs batched and on a spread sample; its numbers must not change
with either (issue 16): batched == image by image, and the sample says how big it is."""

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from scipy import stats

from dicomnode.config import Settings
from dicomnode.imaging import metrics
from dicomnode.imaging.degrade import Degradation
from dicomnode.imaging.enhance import SrcnnMethod, enhance_stack
from dicomnode.imaging.metrics import (
    DegradedForSelfCheck,
    mean_interval,
    sampled_indices,
    self_check,
    self_checks,
)
from dicomnode.imaging.srcnn import SrcnnRunner, build_srcnn, from_network
from dicomnode.pipeline.enhancement import enhance_series
from dicomnode.pipeline.methods import methods_for
from dicomnode.pipeline.offline import file_sink, series_in
from tests.integration.test_details_json import UID, write_fixed_series


@pytest.fixture(scope="module")
def srcnn_x2() -> SrcnnMethod:
    """A network with random weights in every layer, so its output differs from bicubic's."""
    network = build_srcnn(2, seed=11)
    rng = np.random.default_rng(11)
    last = network.get_layer("conv3")
    last.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in last.get_weights()])
    return SrcnnMethod(SrcnnRunner(from_network(network)))


def ct_like(seed: int, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    body = np.where(
        (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (shape[0] / 3) ** 2, 40, -1000
    )
    noise = np.random.default_rng(seed).normal(0, 15, shape)
    return (body + noise + 300 * np.sin(xx / (4 + seed))).astype(np.float32)


def test_batched_self_check_gives_the_numbers_of_one_image_at_a_time(srcnn_x2) -> None:
    images = [ct_like(seed, (64, 64)) for seed in range(4)] + [ct_like(9, (48, 80))]
    calls: list[int] = []

    def restore_stack(stack: np.ndarray) -> np.ndarray:
        calls.append(len(stack))
        return enhance_stack(stack, "CT", srcnn_x2).values

    batched = self_checks(images, restore_stack, Degradation(scale=2), [None] * len(images))
    one_by_one = [
        self_check(
            image,
            lambda low: enhance_stack(low[None], "CT", srcnn_x2).values[0],
            Degradation(scale=2),
        )
        for image in images
    ]
    assert sorted(calls) == [1, 4]  # one call per image shape
    for batch, single in zip(batched, one_by_one, strict=True):
        assert batch.gain_db == pytest.approx(single.gain_db, abs=1e-4)
        assert batch.method.ssim == pytest.approx(single.method.ssim, abs=1e-6)
    assert len({round(check.gain_db, 3) for check in batched}) > 1  # not all the same number


def test_a_self_check_prepared_in_part_is_finished_on_use(monkeypatch) -> None:
    """Preparing ahead stops between images when told; what is left is made when it is used,
    and the numbers are those of a self-check made all at once."""
    rng = np.random.default_rng(3)
    images = [rng.normal(0, 100, (64, 64)) for _ in range(3)]
    degradation = Degradation(scale=1)
    stop = threading.Event()
    real = metrics.degrade

    def degrade_then_stop(*args):  # type: ignore[no-untyped-def]
        stop.set()  # the head start ends while the first image is degraded
        return real(*args)

    monkeypatch.setattr(metrics, "degrade", degrade_then_stop)
    prepared = DegradedForSelfCheck(images, degradation, [None] * 3)
    prepared.prepare(stop)
    assert [low is not None for low in prepared._degraded] == [True, False, False]
    assert prepared._bicubic == [None, None, None]
    monkeypatch.setattr(metrics, "degrade", real)
    at_once = DegradedForSelfCheck(images, degradation, [None] * 3)
    at_once.prepare(threading.Event())
    assert prepared.bicubic() == at_once.bicubic()
    pairs = zip(prepared.degraded(), at_once.degraded(), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


@pytest.mark.parametrize(
    ("count", "limit", "expected"),
    [
        (10, 16, list(range(10))),
        (10, 0, list(range(10))),
        (5, 1, [2]),
        (9, 3, [0, 4, 8]),
        (300, 16, [round(i * 299 / 15) for i in range(16)]),
    ],
)
def test_the_sample_is_spread_from_first_to_last_image(count, limit, expected) -> None:
    chosen = sampled_indices(count, limit)
    assert chosen == expected
    assert len(set(chosen)) == len(chosen)


def test_the_interval_is_student_t_of_the_mean() -> None:
    values = [1.0, 1.5, 0.5, 2.0, 1.2]
    low, high = mean_interval(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    assert mean_interval([1.0]) is None


def test_a_sampled_series_reports_how_many_images_it_checked(tmp_path: Path) -> None:
    write_fixed_series(tmp_path / "in", count=7)  # the last image is declined: 6 enhanced
    settings = Settings()
    settings = replace(
        settings, enhance=replace(settings.enhance, methods=["baseline"], self_check_images=3)
    )
    ((_, inputs),) = series_in(tmp_path / "in").items()
    output = enhance_series(1, inputs, settings, methods_for(settings), file_sink(tmp_path / "out"))
    (method,) = output.outcome.methods
    details = method.as_dict()
    checked = [image["self_check_gain_db"] for image in details["per_image"]]
    assert details["images"] == 6
    assert details["self_check_images"] == 3
    assert [gain is not None for gain in checked] == [True, False, True, False, False, True]
    low, high = details["self_check_gain_ci_db"]
    mean = details["self_check_gain_mean_db"]
    assert low <= mean <= high
    assert mean == pytest.approx(np.mean([g for g in checked if g is not None]), abs=1e-4)
    assert method.self_check_text.endswith("on 3 of 6 images")


def test_a_blank_image_is_left_out_and_the_rest_enhanced(tmp_path: Path) -> None:
    """An image every pixel of which has one value (a blank frame) has no PSNR, SSIM or
    self-check: it used to end the whole job in an internal error. It is declined with its
    reason (it goes out as it came, with the originals) and the others are enhanced."""
    write_fixed_series(tmp_path / "in", count=5)  # the last image is declined: 4 enhanced
    blank = tmp_path / "in" / "1.dcm"
    ds = dcmread(blank)
    ds.PixelData = np.full((ds.Rows, ds.Columns), 40, np.int16).tobytes()
    ds.save_as(blank)
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, methods=["baseline"]))
    ((_, inputs),) = series_in(tmp_path / "in").items()

    output = enhance_series(1, inputs, settings, methods_for(settings), file_sink(tmp_path / "out"))
    (method,) = output.outcome.methods
    assert [image.source_sop for image in method.images] == [f"{UID}.1.{n}" for n in (1, 3, 4)]
    assert all(image.self_check_gain_db is not None for image in method.images)
    reasons = {item.sop: item.reason for item in output.outcome.declined}
    assert "blank: every pixel (padding aside) has the same value" in reasons[f"{UID}.1.2"]
    assert output.unenhanced == {f"{UID}.1.2", f"{UID}.1.5"}


def test_images_that_cannot_be_scored_are_declined_with_their_reason_and_the_rest_enhanced(
    tmp_path: Path,
) -> None:
    """Each of these ended the whole derived job in an internal error, retried until dead (and
    with forward_originals = false, its originals with it): a 10x10 image at scale 2 (SSIM's
    7x7 window does not fit once 2 border pixels are left out), one whose only detail lies in
    that border, a two-valued RescaleSlope, a non-finite intercept and PixelPaddingValue with
    two values. Each is declined, named, and goes out as it came; the others are enhanced."""
    write_fixed_series(tmp_path / "in", count=9)  # image 9 is declined for its HighBit
    files = [tmp_path / "in" / f"{index}.dcm" for index in range(9)]

    def change(index: int, **values: object) -> None:
        ds = dcmread(files[index])
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(files[index])

    change(0, Rows=10, Columns=10, PixelData=np.arange(100, dtype=np.int16).tobytes())
    edge_only = np.zeros((128, 128), np.int16)
    edge_only[0, :] = 500
    change(1, PixelData=edge_only.tobytes())
    change(2, RescaleSlope="1\\1")
    change(3, RescaleIntercept="1e400")
    change(4, PixelPaddingValue=[-2000, -2000])
    settings = Settings()
    settings = replace(settings, enhance=replace(settings.enhance, methods=["baseline"], scale=2))
    ((_, inputs),) = series_in(tmp_path / "in").items()

    output = enhance_series(1, inputs, settings, methods_for(settings), file_sink(tmp_path / "out"))
    (method,) = output.outcome.methods
    assert [image.source_sop for image in method.images] == [f"{UID}.1.{n}" for n in (6, 7, 8)]
    reasons = {item.sop: item.reason for item in output.outcome.declined}
    assert reasons[f"{UID}.1.1"] == (
        f"sop={UID}.1.1: 10x10 pixels, too small to score at scale 2: SSIM's 7x7 window needs "
        "at least 12x12 pixels (the scores leave out a 2-pixel border at scale 2)"
    )
    assert "blank: every pixel (padding aside) has the same value" in reasons[f"{UID}.1.2"]
    assert reasons[f"{UID}.1.3"] == (
        f"sop={UID}.1.3: RescaleSlope has 2 values (1\\1); it may have only one"
    )
    assert (
        reasons[f"{UID}.1.4"] == f"sop={UID}.1.4: RescaleIntercept='1e400' is not a finite number"
    )
    assert reasons[f"{UID}.1.5"].startswith(f"sop={UID}.1.5: PixelPaddingValue has 2 values")
    assert output.unenhanced == {f"{UID}.1.{n}" for n in (1, 2, 3, 4, 5, 9)}
