"""The working-range map is invertible and recorded; the classical baseline does what it says."""

import numpy as np
import pytest

from dicomnode.imaging.baseline import BaselineParams, enhance_baseline
from dicomnode.imaging.degrade import Degradation, degrade
from dicomnode.imaging.enhance import BaselineMethod, enhance_stack
from dicomnode.imaging.metrics import compare
from dicomnode.imaging.normalize import (
    CT_HU_RANGE,
    PERCENTILES,
    Normalization,
    denormalize,
    normalization_for,
    normalize,
)


def phantom(size: int = 128) -> np.ndarray:
    """A disc of soft tissue (40 HU) with a bright insert (400 HU) in air (-1000 HU)."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    image = np.full((size, size), -1000.0, np.float32)
    image[np.hypot(yy, xx) < size * 0.4] = 40.0
    image[np.hypot(yy - 10, xx + 12) < size * 0.08] = 400.0
    return image


def test_ct_uses_the_fixed_hounsfield_range_for_every_image() -> None:
    first = normalization_for(phantom(), "CT")
    second = normalization_for(phantom() + 500, "ct")
    assert first == second == Normalization(*CT_HU_RANGE, rule="ct-hu-fixed")
    assert normalize(np.array([-1024.0, 3071.0]), first).tolist() == [0.0, 1.0]


def test_mr_uses_its_own_percentiles_ignoring_padding() -> None:
    image = np.linspace(0, 1000, 10_000, dtype=np.float32).reshape(100, 100)
    padding = np.zeros(image.shape, bool)
    padding[:50] = True  # the low half is padding: percentiles come from the high half only
    norm = normalization_for(image, "MR", padding)
    assert norm.rule == "percentile-0.5-99.5"
    assert norm.low == pytest.approx(502.5, abs=0.5)
    assert norm.high == pytest.approx(997.5, abs=0.5)


def test_the_map_is_invertible_without_clipping() -> None:
    image = phantom() * 3.0  # values far outside the CT range survive the round trip
    norm = normalization_for(image, "CT")
    back = denormalize(normalize(image, norm), norm)
    np.testing.assert_allclose(back, image, rtol=0, atol=1e-3)


def test_constant_image_gets_a_usable_map() -> None:
    norm = normalization_for(np.full((8, 8), 7.0), "MR")
    assert norm == Normalization(7.0, 8.0, rule="constant")


def test_a_nearly_empty_degraded_image_maps_its_full_range() -> None:
    """Three stray pixels of one step, degraded as the self-check and training do: cubic
    resampling leaves ~1e-9 ringing everywhere, the percentiles would sit that close, and the
    network would see inputs of ~1e8. The full range keeps them in 0...1."""
    image = np.zeros((384, 274), np.float32)
    image[100, 50] = image[200, 150] = image[300, 250] = 1.0
    degraded = degrade(image, Degradation(scale=2, blur_sigma=1.0))
    low, high = np.percentile(degraded, PERCENTILES)
    assert 0 < high - low < 1e-6  # what the percentiles alone would have given
    norm = normalization_for(degraded, "MR")
    assert norm == Normalization(float(degraded.min()), float(degraded.max()), rule="min-max")
    scaled = normalize(degraded, norm)
    assert scaled.min() == 0.0 and scaled.max() == pytest.approx(1.0)


def test_baseline_denoises_a_noisy_phantom() -> None:
    clean = phantom()
    noisy = clean + np.random.default_rng(1).normal(0, 30, clean.shape).astype(np.float32)
    result = enhance_stack(noisy[None], "CT", BaselineMethod(BaselineParams(unsharp_amount=0)))
    before = compare(clean, noisy).psnr_db
    after = compare(clean, result.values[0]).psnr_db
    assert after > before + 1.0
    assert result.method == "baseline" and result.normalizations[0].rule == "ct-hu-fixed"


@pytest.mark.parametrize("denoise", ["bilateral", "nlm", "none"])
def test_baseline_keeps_mean_intensity_and_grid(denoise: str) -> None:
    image = normalize(phantom(), normalization_for(phantom(), "CT"))
    out = enhance_baseline(image, BaselineParams(denoise=denoise, clahe_clip=0))
    assert out.shape == image.shape and out.dtype == np.float32
    assert abs(float(out.mean() - image.mean())) < 1e-3


def test_baseline_upsamples_by_its_scale() -> None:
    image = np.random.default_rng(0).random((40, 30), dtype=np.float32)
    assert enhance_baseline(image, scale=3).shape == (120, 90)


def test_unsharp_mask_sharpens() -> None:
    image = normalize(phantom(), normalization_for(phantom(), "CT"))
    sharp = enhance_baseline(image, BaselineParams(denoise="none", unsharp_amount=1.0))
    assert np.abs(np.diff(sharp)).max() > np.abs(np.diff(image)).max()


def test_clahe_is_off_by_default_and_changes_contrast_when_on() -> None:
    image = normalize(phantom(), normalization_for(phantom(), "MR"))
    plain = enhance_baseline(image, BaselineParams(denoise="none", unsharp_amount=0))
    np.testing.assert_array_equal(plain, image)
    equalised = enhance_baseline(
        image, BaselineParams(denoise="none", unsharp_amount=0, clahe_clip=0.02)
    )
    assert not np.allclose(equalised, image)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"denoise": "median"}, "denoise"),
        ({"unsharp_sigma": 0}, "unsharp_sigma"),
        ({"denoise_strength": -1}, "denoise_strength"),
    ],
)
def test_bad_baseline_parameters_are_refused_by_name(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        BaselineParams(**kwargs)
