"""The measurement of a derived image was made faster (issue 16); its numbers must not change
beyond what the reports show (4 decimals).

Each changed part is checked against the code it replaces, on every real CT and MR slice
in tests/data, pydicom's CT_small and MR_small, and generated images, each scored against
outputs like a method's (the classical baseline's, added noise, the self-check's blur, a drift):

* `laplacian` vs `scipy.ndimage.laplace`: the same 5 taps and mirrored border; on integer-valued
  sources every sum is exact (identical), on float outputs the order of three additions differs:
  variances agree to 1e-12 relative.
* `assess` end to end (and `measure_source` once + `assess_against` per output) vs the code it
  replaced (kept below as `assess_before`, with QA's noise ratio of 2026-12-02 written the
  plain way): verdicts and reasons equal, measures within the above.
* `noise_in` (the diagonal wavelet band alone, transposed passes, the median from one
  partition) vs PyWavelets' `dwt2` and numpy's median: equal; over every detail it is
  scikit-image's `estimate_sigma` wherever no detail is an exact zero. `detail_positions` and
  `touching_positions` vs PyWavelets' own transform of the mask with the filters' magnitudes.
* `ssim_map` (OpenCV, float32) vs scikit-image's SSIM map (float64): its mean within 2e-6 on
  every real slice (with its padding stored as far as -33792 HU too) and 2e-5 on noiseless
  synthetic steps, where the constants are small next to float32's rounding of the squares;
  5e-4 per pixel; an output float32 cannot square, in float64.
* `compare` vs PSNR and scikit-image's SSIM as computed before (`compare_before`): PSNR within
  1e-6 dB, SSIM as above; a reported (rounded) value moves by at most its last digit, and only
  where the value sits on a rounding boundary.
* QA's measures (OpenCV's masked sums) within 1e-9 of the code they replace.
"""

import math
from collections.abc import Iterator

import numpy as np
import pytest
import pywt
from pydicom import dcmread
from scipy.ndimage import laplace
from scipy.stats import norm
from skimage.filters import unsharp_mask
from skimage.metrics import structural_similarity
from skimage.restoration import estimate_sigma

from dicomnode.imaging import metrics
from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.degrade import Degradation, degrade
from dicomnode.imaging.enhance import BaselineMethod, enhance_stack
from dicomnode.imaging.metrics import ImageMetrics, compare, data_range_of, ssim_map
from dicomnode.imaging.noise import detail_positions, noise_in, touching_positions
from dicomnode.imaging.normalize import CT_HU_RANGE
from dicomnode.imaging.outcome import DIGITS, reported_fidelity
from dicomnode.imaging.pixels import to_modality
from dicomnode.imaging.qa import (
    QaThresholds,
    QaVerdict,
    assess,
    assess_against,
    body_mask,
    laplacian,
    measure_source,
)
from tests.support.data import CT_FOLDERS, MR_FOLDERS, dicom_files, pydicom_test_files

# name, modality, source (modality values), padding as the node scores it, storable limits
Slice = tuple[str, str, np.ndarray, np.ndarray, tuple[float, float]]


def real_slices() -> Iterator[Slice]:
    """Every real slice the repository holds, with its padding as the node scores it."""
    files = dicom_files(*CT_FOLDERS, *MR_FOLDERS)
    files += [p for p in pydicom_test_files() if p.name in ("CT_small.dcm", "MR_small.dcm")]
    for path in files:
        dataset = dcmread(path)
        image = to_modality(dataset)
        domain = image.domain
        low, high = sorted(
            value * domain.slope + domain.intercept
            for value in (domain.stored_min, domain.stored_max)
        )
        frame = len(image.values) // 2
        source, padding = image.values[frame], image.padding[frame]
        if dataset.Modality == "CT":
            padding = padding | (source < CT_HU_RANGE[0])
        yield f"{path.parent.name}/{path.name}", dataset.Modality, source, padding, (low, high)


def generated() -> Iterator[Slice]:
    """A phantom with a body, noise and padding; a 12-bit one with body pixels already at the
    storable maximum; a ramp; a step (no noise at all)."""
    yy, xx = np.mgrid[:96, :128]
    body = np.where((yy - 48) ** 2 + (xx - 64) ** 2 < 40**2, 40.0, -1000.0)
    noise = np.random.default_rng(3).normal(0, 15, body.shape)
    phantom = np.round(body + noise + 300 * np.sin(xx / 7))
    padding = np.zeros(body.shape, bool)
    padding[:, :6] = True
    phantom[padding] = -2048
    saturated = np.clip(phantom + 3000, 0, 4095)
    saturated[40:50, 60:70] = 4095
    ramp = np.tile(np.linspace(0.0, 100.0, 64), (64, 1))
    step = np.where(np.arange(64)[None, :] < 20, 0.0, 500.0) * np.ones((64, 1))
    int16 = (-32768.0, 32767.0)
    for name, modality, image, mask, limits in (
        ("phantom", "CT", phantom, padding, int16),
        ("saturated", "MR", saturated, padding, (0.0, 4095.0)),
        ("ramp", "MR", ramp, np.zeros(ramp.shape, bool), int16),
        ("step", "MR", step, np.zeros(step.shape, bool), int16),
    ):
        yield name, modality, image.astype(np.float32), mask, limits


def outputs(source: np.ndarray, padding: np.ndarray, modality: str) -> Iterator[np.ndarray]:
    """Outputs like a method's: the baseline's, noisier, blurred, over-sharpened, drifted."""
    yield enhance_stack(source[None], modality, BaselineMethod(BaselineParams())).values[0]
    noise = np.random.default_rng(7).normal(0, 4, source.shape)
    yield (source + noise).astype(np.float32)
    yield degrade(source, Degradation(scale=1))
    yield unsharp_mask(source.astype(np.float64), radius=1, amount=3, preserve_range=True)
    yield (source * 1.05 + 20).astype(np.float32)


def cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, float], np.ndarray]]:
    """(name, source, padding, limits, output) for each slice and each kind of output."""
    found = []
    for name, modality, source, padding, limits in [*real_slices(), *generated()]:
        for index, output in enumerate(outputs(source, padding, modality)):
            found.append((f"{name}#{index}", source, padding, limits, output))
    return found


CASES = cases()


def compare_before(
    reference: np.ndarray, test: np.ndarray, *, padding: np.ndarray | None = None
) -> ImageMetrics:
    """`metrics.compare` as it was (no shave), with scikit-image's SSIM."""
    ref, out = reference.astype(np.float64), test.astype(np.float64)
    valid = ~padding if padding is not None else np.ones(ref.shape, bool)
    data_range = data_range_of(ref, ~valid)
    mse = float(np.mean((ref[valid] - out[valid]) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
    _, full = structural_similarity(ref, out, data_range=data_range, full=True)
    return ImageMetrics(psnr, float(full[valid].mean()), data_range)


def by_pywt(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finest diagonal details made of `mask` pixels alone, and those any of them goes
    into, told by PyWavelets itself: an indicator transformed with the magnitudes of db2's
    filters is 0 exactly where none of its pixels reaches (sums of non-negative products)."""
    filters = [np.abs(taps).tolist() for taps in pywt.Wavelet("db2").filter_bank]
    magnitudes = pywt.Wavelet("db2-magnitudes", filter_bank=filters)
    _, (_, _, outside) = pywt.dwt2((~mask).astype(float), magnitudes, mode="symmetric")
    _, (_, _, touching) = pywt.dwt2(mask.astype(float), magnitudes, mode="symmetric")
    return outside == 0, touching > 0


def noise_before(image: np.ndarray, positions: np.ndarray) -> float:
    """The wavelet noise estimate at `positions`, the plain way: `dwt2`'s diagonal band and
    numpy's median."""
    _, (_, _, diagonal) = pywt.dwt2(image, "db2", mode="symmetric")
    return float(np.median(np.abs(diagonal[positions]))) / float(norm.ppf(0.75))


def noise_ratio_before(
    src: np.ndarray, out: np.ndarray, body: np.ndarray, valid: np.ndarray
) -> float | None:
    """QA's noise ratio the plain way: in the body's own details (those it goes into when
    fewer than 64; None when still fewer), or in the rest's where worse, the rest's source
    noise taken as at least the body's."""
    inside, touching = by_pywt(body)
    inside = inside if inside.sum() >= 64 else touching
    if inside.sum() < 64:
        return None
    source_body = noise_before(src, inside)
    result = ratio(noise_before(out, inside), source_body)
    rest, _ = by_pywt(valid & ~body)
    if rest.sum() >= 64:
        source_rest = max(noise_before(src, rest), source_body)
        result = max(result, ratio(noise_before(out, rest), source_rest))
    return result


def ratio(output: float, source: float) -> float:
    return output / source if source > 0 else (1.0 if output == 0 else float("inf"))


def assess_before(
    source: np.ndarray, output: np.ndarray, *, limits: tuple[float, float], padding: np.ndarray
) -> QaVerdict:
    """`qa.assess` as it was: scipy's Laplacian, scikit-image's noise estimate, all per call."""
    thresholds = QaThresholds()
    mask = body_mask(source, padding)
    src, out = source.astype(np.float64), output.astype(np.float64)
    data_range = float(src[mask].max() - src[mask].min()) or 1.0
    low, high = limits

    def saturated(image: np.ndarray) -> np.ndarray:
        return (image <= low) | (image >= high)

    measures = {
        "sharpness_ratio": ratio(float(laplace(out)[mask].var()), float(laplace(src)[mask].var()))
    }
    noise = noise_ratio_before(src, out, mask, ~padding)
    if noise is not None:
        measures["noise_ratio"] = noise
    measures["drift_fraction"] = abs(float(out[mask].mean() - src[mask].mean())) / data_range
    measures["saturation_fraction"] = float(np.mean(saturated(out)[mask] & ~saturated(src)[mask]))
    failed, warned = [], []  # the reasons as they are told since 2026-12-05
    for name, value in measures.items():
        warn, fail = getattr(thresholds, name)
        if value > fail:
            failed.append(f"{name.replace('_', ' ')} {value:.3g} > {fail}")
        elif value > warn:
            warned.append(f"{name.replace('_', ' ')} {value:.3g} > {warn}")
    if failed:
        reasons = failed + [f"{reason} (a warning only)" for reason in warned]
        return QaVerdict("fail", tuple(reasons), measures)
    return QaVerdict("warn" if warned else "ok", tuple(warned), measures)


def test_the_cases_cover_every_real_slice_and_each_kind_of_output() -> None:
    names = {name.split("#")[0] for name, *_ in CASES}
    assert len(names) == len(dicom_files(*CT_FOLDERS, *MR_FOLDERS)) + 2 + 4
    assert len(CASES) == 5 * len(names)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_laplacian_is_scipys(case) -> None:
    _, source, _, _, output = case
    src, out = source.astype(np.float64), output.astype(np.float64)
    for image in (src, out):
        if np.array_equal(image, np.round(image)):  # integer-valued: exact sums, same bits
            assert np.array_equal(laplacian(image), laplace(image))
        else:
            assert np.allclose(laplacian(image), laplace(image), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_noise_in_is_the_plain_estimate_of_the_same_details(case) -> None:
    _, source, padding, _, output = case
    mask = body_mask(source, padding)
    positions = detail_positions(mask)
    assert np.array_equal(positions, by_pywt(mask)[0])
    for image in (source.astype(np.float64), output.astype(np.float64)):
        assert noise_in(image, positions) == noise_before(image, positions)


@pytest.mark.parametrize("shape", [(64, 96), (64, 98), (65, 97), (8, 8)])
def test_noise_in_of_every_detail_is_scikit_images_estimate(shape) -> None:
    """Odd and even counts of details (the middle one, or the mean of the two middle ones), odd
    and even sides; an image of zeros has no details scikit-image counts (NaN), and ours are
    all 0."""
    image = np.random.default_rng(9).normal(0, 10, shape)
    every = detail_positions(np.ones(shape, bool))
    assert every.all() and every.shape == pywt.dwt2(image, "db2", mode="symmetric")[1][2].shape
    assert noise_in(image, every) == float(estimate_sigma(image))
    zeros = np.zeros(shape)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(float(estimate_sigma(zeros)))
    assert noise_in(zeros, every) == 0.0


@pytest.mark.parametrize("shape", [(40, 56), (41, 57)])
def test_detail_positions_are_those_pywt_reaches_from_the_mask_alone(shape) -> None:
    """Random blobs, a mask touching each border, one too thin for any detail to lie inside."""
    rng = np.random.default_rng(11)
    blobs = laplace(rng.normal(0, 1, shape)) > 0.5
    border = np.zeros(shape, bool)
    border[:9, :] = border[:, -7:] = True
    thin = np.zeros(shape, bool)
    thin[20, 3:30] = True
    for mask in (blobs, ~blobs, border, thin, np.ones(shape, bool)):
        inside, touching = by_pywt(mask)
        assert np.array_equal(detail_positions(mask), inside)
        assert np.array_equal(touching_positions(mask), touching)
    assert detail_positions(thin).sum() == 0
    assert touching_positions(thin).sum() == 2 * 15  # rows 20 and columns 3-29 go into these


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_ssim_map_is_scikit_images(case) -> None:
    _, source, padding, _, output = case
    ref, out = source.astype(np.float64), output.astype(np.float64)
    data_range = data_range_of(ref, padding)
    _, expected = structural_similarity(ref, out, data_range=data_range, full=True)
    ours = ssim_map(ref, out, data_range)
    assert np.abs(ours - expected).max() <= 5e-4
    scored = ~padding
    assert abs(ours[scored].mean() - expected[scored].mean()) <= ssim_mean_tolerance(case)


def ssim_mean_tolerance(case) -> float:
    """2e-6 on real slices; 2e-5 on the generated noiseless ramp and step (see the module)."""
    return 2e-5 if case[0].split("#")[0] in ("ramp", "step") else 2e-6


@pytest.mark.parametrize("fill", [-3024.0, -16384.0, -33792.0])
def test_ssim_is_scikit_images_with_padding_far_below_the_body(fill) -> None:
    """Padding outside the reconstruction circle stored far below the body (-33792 HU: stored
    -32768, intercept -1024): the SSIM centres on the scored pixels, not on a mean the padding
    drags away from them (which put the reported SSIM 3e-4 off), and stays within 2e-6 of
    scikit-image's on every real CT slice and kind of output; an MR band at -32768 likewise."""
    for name, modality, source, padding, _ in real_slices():
        rows, columns = source.shape
        outside = np.zeros(source.shape, bool)
        if modality == "CT":
            yy, xx = np.mgrid[:rows, :columns]
            outside = (yy - rows / 2) ** 2 + (xx - columns / 2) ** 2 > (min(rows, columns) / 2) ** 2
        else:
            outside[:, :40] = True
            fill = -32768.0
        far = source.copy()
        far[outside] = fill
        scored = padding | outside
        for index, output in enumerate(outputs(far, scored, modality)):
            expected = compare_before(far, output, padding=scored).ssim
            assert compare(far, output, padding=scored).ssim == pytest.approx(
                expected, rel=0, abs=2e-6
            ), f"{name}#{index}"


def test_ssim_of_an_output_gone_wild_is_a_number() -> None:
    """A diverging model's values (1e20) square beyond float32's range: in float32 the SSIM
    would be NaN; scored in float64 it is a number, as it was before (around such values every
    running-sum box filter, scikit-image's too, loses the neighbouring windows: only QA's
    verdict on the image means anything there, and QA fails it)."""
    _, _, source, padding, limits = next(real_slices())
    wild = source.copy()
    wild[200:210, 200:210] = 1e20
    assert math.isfinite(compare(source, wild, padding=padding).ssim)
    data_range = data_range_of(source, padding)
    in_float32 = metrics._ssim_formula(
        source.astype(np.float32), wild.astype(np.float32), data_range, 0.0
    )
    assert not np.isfinite(in_float32).all()
    assert assess(source, wild, limits=limits, padding=padding).verdict == "fail"


def test_an_output_with_infinite_pixels_is_scored_and_failed_not_an_error() -> None:
    """PSNR -inf (it was a `math domain error` that failed the job), and QA fails the image
    for its non-finite pixels, so the do-no-harm gate holds the series."""
    _, _, source, padding, limits = next(real_slices())
    broken = source.copy()
    broken[200, 200] = np.inf
    assert compare(source, broken, padding=padding).psnr_db == -math.inf
    verdict = assess(source, broken, limits=limits, padding=padding)
    assert verdict.verdict == "fail" and verdict.reasons == ("1 NaN/infinite pixels",)


def test_qa_refuses_a_source_with_nothing_but_padding() -> None:
    source = np.full((32, 32), -2048.0, np.float32)
    with pytest.raises(ValueError, match="every pixel of the source is padding"):
        measure_source(source, limits=(-32768.0, 32767.0), padding=np.ones(source.shape, bool))


@pytest.mark.parametrize(
    ("offset", "spread"), [(0.0, 100.0), (-1000.0, 12.0), (3000.0, 1.0), (0.0, 1e-3)]
)
def test_ssim_map_is_scikit_images_far_from_zero_and_at_any_scale(offset, spread) -> None:
    """Values far from 0 against their spread (a flat 3000 with noise of 1) would make both sum
    large squares and subtract them: centred on the reference's mean, ours still agrees to
    1e-5 per pixel and 1e-7 on the mean, at any scale."""
    rng = np.random.default_rng(11)
    ref = offset + spread * rng.normal(size=(61, 83))
    out = ref + 0.05 * spread * rng.normal(size=ref.shape)
    data_range = float(ref.max() - ref.min())
    _, expected = structural_similarity(ref, out, data_range=data_range, full=True)
    ours = ssim_map(ref, out, data_range)
    assert np.abs(ours - expected).max() <= 1e-5
    assert abs(ours.mean() - expected.mean()) <= 1e-7


@pytest.mark.parametrize("shape", [(6, 40), (40, 6)])
def test_ssim_refuses_images_smaller_than_its_window_as_scikit_image_does(shape) -> None:
    image = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    with pytest.raises(ValueError, match="7x7"):
        structural_similarity(image, image, data_range=1.0)
    with pytest.raises(ValueError, match="at least 7x7 pixels"):
        ssim_map(image, image, 1.0)


@pytest.mark.parametrize("shape", [(7, 7), (7, 40), (40, 7)])
def test_ssim_takes_images_as_small_as_its_window_as_scikit_image_does(shape) -> None:
    rng = np.random.default_rng(13)
    ref = rng.normal(0, 50, shape)
    out = ref + rng.normal(0, 5, shape)
    _, expected = structural_similarity(ref, out, data_range=300.0, full=True)
    assert np.abs(ssim_map(ref, out, 300.0) - expected).max() <= 1e-6


def test_ssim_map_refuses_what_is_not_one_2d_image() -> None:
    """OpenCV would take a third axis as colour channels, where scikit-image slides a 7x7x7
    window: the two would silently differ."""
    stack = np.zeros((3, 16, 16))
    with pytest.raises(ValueError, match="2-D"):
        ssim_map(stack, stack, 1.0)
    with pytest.raises(ValueError, match="2-D"):
        ssim_map(stack[0], stack[0, :8], 1.0)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_fidelity_and_qa_are_what_they_were(case) -> None:
    _, source, padding, limits, output = case
    before, after = (
        compare_before(source, output, padding=padding),
        compare(source, output, padding=padding),
    )
    assert after.data_range == before.data_range
    assert after.psnr_db == pytest.approx(before.psnr_db, rel=0, abs=1e-6)
    assert after.ssim == pytest.approx(before.ssim, rel=0, abs=ssim_mean_tolerance(case))
    last_digit = 10.0**-DIGITS
    for name in ("psnr_db", "ssim"):
        moved = abs(
            getattr(reported_fidelity(after), name) - getattr(reported_fidelity(before), name)
        )
        assert moved <= last_digit * 1.001, name

    expected = assess_before(source, output, limits=limits, padding=padding)
    measured = measure_source(source, limits=limits, padding=padding)
    for result in (
        assess(source, output, limits=limits, padding=padding),
        assess_against(measured, output),
    ):
        assert (result.verdict, result.reasons) == (expected.verdict, expected.reasons)
        assert result.measures.keys() == expected.measures.keys()
        for key, value in expected.measures.items():
            assert result.measures[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key


def test_real_slices_give_scores_worth_comparing() -> None:
    """The equality above is not vacuous: the outputs differ from their sources, and QA flags
    some of them (the over-sharpened and the drifted)."""
    ssims = [compare(s, o, padding=p).ssim for _, s, p, _, o in CASES]
    verdicts = {assess(s, o, limits=lim, padding=p).verdict for _, s, p, lim, o in CASES}
    assert min(ssims) < 0.9 and verdicts >= {"ok", "warn", "fail"}
    saturations = [assess(s, o, limits=lim, padding=p).measures for _, s, p, lim, o in CASES]
    assert max(m["saturation_fraction"] for m in saturations) > 0


def test_the_ssim_map_made_in_bands_of_rows_is_the_whole_images_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large image's map is made a band of rows at a time (its intermediates took ~1 GB for a
    4096x4096 image): each band with the rows its windows reach, so no value changes, at the
    bands' seams or at the image's own edges, and it still matches scikit-image."""
    rng = np.random.default_rng(5)
    reference = rng.normal(0, 50, (101, 67)).cumsum(axis=0)
    test = reference + rng.normal(0, 20, reference.shape)
    data_range = float(np.ptp(reference))
    whole = ssim_map(reference, test, data_range)
    monkeypatch.setattr(metrics, "SSIM_BAND_ROWS", 8)  # 13 bands, the last of 5 rows
    banded = ssim_map(reference, test, data_range)
    np.testing.assert_array_equal(banded, whole)
    _, expected = structural_similarity(reference, test, data_range=data_range, full=True)
    assert float(np.abs(banded - expected).max()) < 1e-4
