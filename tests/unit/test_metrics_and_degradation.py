"""The metrics convention and the degradation model, on arrays with known answers."""

import math

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnode.imaging.degrade import Degradation, bicubic_restore, crop_to_multiple, degrade
from dicomnode.imaging.metrics import ImageMetrics, compare, summarize
from dicomnode.imaging.pixels import to_modality


def ramp() -> np.ndarray:
    return np.tile(np.linspace(0.0, 100.0, 64), (64, 1))  # data range exactly 100


def ct_slice() -> np.ndarray:
    return to_modality(dcmread(get_testdata_file("CT_small.dcm"))).values[0]


def test_known_pair_gives_known_psnr() -> None:
    # MSE 1 on a range of 100: PSNR = 10 log10(100² / 1) = 40 dB exactly
    metrics = compare(ramp(), ramp() + 1.0)
    assert metrics.data_range == 100.0
    assert metrics.psnr_db == pytest.approx(40.0, abs=1e-9)
    assert metrics.ssim < 1.0


def test_identical_images_score_infinite_psnr_and_ssim_one() -> None:
    metrics = compare(ramp(), ramp())
    assert math.isinf(metrics.psnr_db) and metrics.ssim == pytest.approx(1.0)


def test_shave_ignores_the_border() -> None:
    test = ramp()
    test[:2, :] += 50.0
    assert compare(ramp(), test).psnr_db < 30
    assert math.isinf(compare(ramp(), test, shave=2).psnr_db)


def test_padding_is_left_out_of_range_and_error() -> None:
    reference = ramp()
    reference[:, :8] = -2000.0  # padding far below the anatomy
    padding = np.zeros(reference.shape, bool)
    padding[:, :8] = True
    test = reference.copy()
    test[:, :8] = 0.0
    metrics = compare(reference, test, padding=padding)
    assert metrics.data_range == pytest.approx(ramp()[:, 8:].max() - ramp()[:, 8:].min())
    assert math.isinf(metrics.psnr_db)


def test_series_summary_means_finite_psnrs() -> None:
    summary = summarize(
        [ImageMetrics(40.0, 0.9, 1), ImageMetrics(30.0, 0.7, 1), ImageMetrics(math.inf, 1.0, 1)]
    )
    assert (summary.images, summary.psnr_mean_db, summary.psnr_min_db) == (3, 35.0, 30.0)
    assert summary.ssim_mean == pytest.approx(0.8667, abs=1e-4)


def test_degradation_is_deterministic_per_seed() -> None:
    image = ct_slice()
    model = Degradation(scale=2, noise_fraction=0.01, seed=3)
    assert np.array_equal(degrade(image, model), degrade(image, model))
    other = degrade(image, Degradation(scale=2, noise_fraction=0.01, seed=4))
    assert not np.array_equal(degrade(image, model), other)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downsampling_divides_the_grid_and_bicubic_comes_back_close(scale: int) -> None:
    image = crop_to_multiple(ct_slice(), scale)
    low = degrade(image, Degradation(scale=scale))
    assert low.shape == (image.shape[0] // scale, image.shape[1] // scale)
    restored = bicubic_restore(low, image.shape)
    worse = compare(image, restored).psnr_db
    assert 15 < worse < 60


def test_scale_one_degrades_on_the_native_grid() -> None:
    image = ct_slice()
    degraded = degrade(image, Degradation(scale=1, blur_sigma=1.0))
    assert degraded.shape == image.shape
    assert compare(image, degraded).psnr_db < compare(image, image + 0.1).psnr_db


def test_nearest_neighbour_scores_below_bicubic() -> None:
    image = crop_to_multiple(ct_slice(), 2)
    low = degrade(image, Degradation(scale=2))
    nearest = np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)
    assert (
        compare(image, nearest, shave=2).psnr_db
        < compare(image, bicubic_restore(low, image.shape), shave=2).psnr_db
    )
