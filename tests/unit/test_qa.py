"""QA verdicts: over-enhancement and broken output are flagged, an untouched image is not."""

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from skimage.filters import unsharp_mask

from dicomnode.imaging.pixels import to_modality
from dicomnode.imaging.qa import (
    QaThresholds,
    QaVerdict,
    assess,
    assess_against,
    measure_source,
    merged,
)

LIMITS = (-32768.0, 32767.0)


def ct() -> np.ndarray:
    return to_modality(dcmread(get_testdata_file("CT_small.dcm"))).values[0]


def test_untouched_image_is_ok() -> None:
    result = assess(ct(), ct(), limits=LIMITS)
    assert result.verdict == "ok" and result.reasons == ()
    assert result.measures["sharpness_ratio"] == 1.0


def test_over_sharpened_image_is_flagged() -> None:
    image = ct()
    sharpened = unsharp_mask(image, radius=1, amount=4, preserve_range=True)
    result = assess(image, sharpened, limits=LIMITS)
    assert result.verdict in ("warn", "fail")
    assert any(reason.startswith("sharpness ratio") for reason in result.reasons)


def test_intensity_drift_fails() -> None:
    image = ct()
    result = assess(image, image + 0.1 * (image.max() - image.min()), limits=LIMITS)
    assert result.verdict == "fail"
    assert any(reason.startswith("drift fraction") for reason in result.reasons)


def test_a_failed_image_names_what_failed_it_first_and_a_warning_as_one() -> None:
    """A drifted, sharpened image: the drift fails it, the sharpness only passes its warning
    limit (the reasons used to read as if both had failed it)."""
    image = ct()
    sharpened = unsharp_mask(image, radius=1, amount=1.5, preserve_range=True)
    strict = QaThresholds(sharpness_ratio=(1.1, 1000.0))
    drifted = sharpened + 0.1 * (image.max() - image.min())
    result = assess(image, drifted, limits=LIMITS, thresholds=strict)
    assert result.verdict == "fail"
    assert result.reasons[0].startswith("drift fraction ") and result.reasons[0].endswith(" > 0.05")
    assert result.reasons[1].startswith("sharpness ratio ")
    assert result.reasons[1].endswith(" > 1.1 (a warning only)"), result.reasons
    warned = assess(image, sharpened, limits=LIMITS, thresholds=strict)
    assert warned.verdict == "warn" and warned.reasons[0].endswith(" > 1.1"), warned.reasons


def test_frames_told_as_one_put_a_failed_frame_first_and_warnings_as_warnings() -> None:
    """A multi-frame image whose first frame only warns and whose second fails."""
    warned = QaVerdict("warn", ("sharpness ratio 4.45 > 2.0",))
    failed = QaVerdict(
        "fail", ("drift fraction 0.136 > 0.05", "noise ratio 2 > 1.5 (a warning only)")
    )
    worst, reasons = merged([("frame 1 of 2: ", warned), ("frame 2 of 2: ", failed)])
    assert (worst, reasons) == (
        "fail",
        (
            "frame 2 of 2: drift fraction 0.136 > 0.05",
            "frame 2 of 2: noise ratio 2 > 1.5 (a warning only)",
            "frame 1 of 2: sharpness ratio 4.45 > 2.0 (a warning only)",
        ),
    )
    assert merged([("a: ", warned), ("b: ", QaVerdict("ok", ()))]) == (
        "warn",
        ("a: sharpness ratio 4.45 > 2.0",),
    )


def test_nan_output_fails_naming_the_count() -> None:
    output = ct()
    output[0, :3] = np.nan
    result = assess(ct(), output, limits=LIMITS)
    assert result.verdict == "fail" and result.reasons == ("3 NaN/infinite pixels",)


def body_in_clipped_air() -> tuple[np.ndarray, np.ndarray]:
    """A CT-like slice as many scanners store one: a noisy body (10 HU) with two noisy lungs
    (-800 HU) in air clipped flat at -1024 HU, and padding stored at -3024 HU outside the
    reconstruction circle."""
    yy, xx = np.mgrid[:128, :128]
    body = (yy - 64) ** 2 / 40**2 + (xx - 64) ** 2 / 50**2 < 1
    lungs = body & ((yy - 64) ** 2 / 25**2 + (np.abs(xx - 64) - 22) ** 2 / 14**2 < 1)
    noise = np.random.default_rng(1).normal(0, 10, body.shape)
    source = np.where(body, np.round(np.where(lungs, -800, 40) + noise), -1024.0)
    padding = (yy - 64) ** 2 + (xx - 64) ** 2 > 63**2
    source[padding] = -3024.0
    return source, padding


def test_flat_air_and_padding_do_not_decide_the_noise_ratio() -> None:
    """Over the whole image the flat air's wavelet details (~1e-31, not exact zeros) were most
    of them: the source's noise estimate came out ~0, and faint texture in the output's air
    (or its padding filled with -1024 HU, as the node's output holds it) made the ratio
    astronomical. Now: the body's details, and the rest's against at least the body's noise."""
    source, padding = body_in_clipped_air()
    faint = np.random.default_rng(2).normal(0, 1, source.shape)
    output = np.where(source > -1024, source, source + faint)
    output[padding] = -1024.0
    result = assess(source, output, limits=LIMITS, padding=padding)
    assert 0.95 <= result.measures["noise_ratio"] <= 1.05
    assert result.verdict == "ok", result.reasons


@pytest.mark.parametrize(("where", "low", "high"), [("body", 2.0, 2.5), ("air", 1.5, 2.2)])
def test_noise_added_to_the_body_or_the_air_is_flagged(where, low, high) -> None:
    """20 HU added: in the body, sqrt(10^2 + 20^2) / 10 = 2.24; in the air (which had none,
    so against the body's 10 HU) the rest's median also counts the lungs' unchanged 10 HU
    (Otsu leaves them out of the body): ~1.6. A median sees noise over most of a region, not
    in a part of it: noise added to the lungs alone goes unseen, as it did before."""
    source, padding = body_in_clipped_air()
    region = source > -700 if where == "body" else source == -1024
    added = np.random.default_rng(3).normal(0, 20, source.shape)
    output = np.where(region, source + added, source)
    result = assess(source, output, limits=LIMITS, padding=padding)
    assert low <= result.measures["noise_ratio"] <= high
    assert result.verdict == "warn" and result.reasons[0].startswith("noise ratio")


def test_a_sliver_of_a_body_has_no_noise_verdict() -> None:
    """Fewer than 64 wavelet details, even counting those its edge goes into: a median of so
    few is chance (a 5x5 body: one detail), so the noise is not measured, the rest still is."""
    rng = np.random.default_rng(6)
    source = np.full((64, 64), -1000.0) + rng.normal(0, 10, (64, 64))
    source[30:36, 30:36] += 1040
    output = source + rng.normal(0, 30, source.shape)
    result = assess(source, output, limits=LIMITS)
    assert "noise_ratio" not in result.measures and "sharpness_ratio" in result.measures


def test_a_noiseless_body_is_compared_at_the_rounding_noise_of_one_stored_step() -> None:
    """A body without any noise (a flat phantom) and an output off by float rounding: equal as
    stored, so QA passes it, at step / sqrt(12) for both; without a step the ratio is huge."""
    source, padding = body_in_clipped_air()
    source[~padding] = np.where(source[~padding] > -1024, 40.0, -1024.0)
    output = source + np.random.default_rng(4).normal(0, 1e-4, source.shape)
    measured = measure_source(source, limits=LIMITS, padding=padding, step=1.0)
    assert measured.noise is not None
    assert measured.noise.body_noise == measured.noise.floor == pytest.approx(1 / 12**0.5)
    for result in (
        assess_against(measured, output),
        assess(source, output, limits=LIMITS, padding=padding, step=1.0),
    ):
        assert result.measures["noise_ratio"] == 1.0 and result.verdict == "ok"
    unfloored = assess(source, output, limits=LIMITS, padding=padding)
    assert unfloored.measures["noise_ratio"] > 1e6 and unfloored.verdict == "fail"


def nearly_empty_slice() -> np.ndarray:
    """The last slice of an MR volume stored with a zeroed background: three isolated pixels of
    one stored step each, all else 0. Otsu's body is those three pixels."""
    source = np.zeros((64, 64))
    source[10, 12] = source[30, 40] = source[50, 20] = 1.0
    return source


def test_changes_that_round_away_are_not_over_enhancement() -> None:
    """A network's float output lowers the three pixels to ~0.88 and lifts the background by
    0.04: stored, it is the source again. Before, such a slice failed QA (a 0.12 drift of a
    1-step range, and any change of a body whose Laplacian varies by nothing read as an
    infinite sharpness ratio), and with it held the whole series. A mean moved by less than
    half a stored step (`step`), and a Laplacian variance below that of rounding noise, are
    not told apart from rounding."""
    source = nearly_empty_slice()
    output = np.where(source > 0, 0.0, 0.04)
    output[10, 12], output[30, 40], output[50, 20] = 0.88, 0.85, 0.9
    assert np.array_equal(np.round(output), source)
    unfloored = assess(source, output, limits=LIMITS)
    assert unfloored.verdict == "fail"
    assert unfloored.measures["sharpness_ratio"] == np.inf
    assert unfloored.measures["drift_fraction"] == pytest.approx(0.1233, abs=1e-3)
    result = assess(source, output, limits=LIMITS, step=1.0)
    assert result.verdict == "ok", result.reasons
    assert result.measures["sharpness_ratio"] == 1.0 and result.measures["drift_fraction"] == 0.0


def test_a_drift_of_whole_stored_steps_still_fails_on_a_nearly_empty_slice() -> None:
    """Two steps up on the same three pixels: 1.5 steps beyond rounding, of a 1-step range."""
    source = nearly_empty_slice()
    result = assess(source, source * 3, limits=LIMITS, step=1.0)
    assert result.verdict == "fail"
    assert result.measures["drift_fraction"] == pytest.approx(1.5)
