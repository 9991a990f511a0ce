"""The CT phantom of issue 13 through the node's default method (SRCNN x1, the CT model).

A sharp-edged water body in air with 12 HU noise: the kind of image on which a network that
sharpens noise or draws a frame does harm. Target: away from the body edge, the derived image
stays within 3x the source's noise of it, and the image border is no different.
"""

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from dicomnode.config import Settings
from dicomnode.imaging.enhance import enhance_stack
from dicomnode.imaging.qa import assess
from dicomnode.pipeline.methods import configured_methods

NOISE_HU = 12.0
EDGE_BAND_PX = 6


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, derived, edge band) for a 256² phantom."""
    size = 256
    rows, cols = np.mgrid[:size, :size]
    body = ((rows - size / 2) / (size * 0.38)) ** 2 + ((cols - size / 2) / (size * 0.3)) ** 2 <= 1
    noise = np.random.default_rng(0).normal(0, NOISE_HU, (size, size))
    source = (np.where(body, 40.0, -1000.0) + noise).astype(np.float32)
    [method] = configured_methods(Settings(), "CT")
    derived = enhance_stack(source[None], "CT", method).values[0]
    edges = binary_dilation(body ^ binary_erosion(body), iterations=EDGE_BAND_PX)
    return source, derived, edges


def _border(shape: tuple[int, ...], width: int) -> np.ndarray:
    border = np.ones(shape, bool)
    border[width:-width, width:-width] = False
    return border


def test_no_frame_along_the_image_border(phantom) -> None:
    source, derived, edges = phantom
    change = np.abs(derived - source)
    inner = ~edges & ~_border(source.shape, 2 * EDGE_BAND_PX)
    border = _border(source.shape, EDGE_BAND_PX) & ~edges
    # the border changes no more than the inside does, and within the noise target
    assert np.percentile(change[border], 99) <= 3 * NOISE_HU
    assert np.percentile(change[border], 99) <= 1.5 * np.percentile(change[inner], 99)


def test_away_from_edges_the_derived_image_stays_within_three_noise_levels(phantom) -> None:
    """Issue 13's target. The shipped CT x1 model gives 11.7 HU here over the default 8 views
    (15.8 in a single pass); the two before it 35.98 and 39.1, the first model 85
    (models/MODEL_CARD.md)."""
    source, derived, edges = phantom
    away = ~edges & ~_border(source.shape, 8)
    assert np.percentile(np.abs(derived - source)[away], 99) <= 3 * NOISE_HU


def test_qa_passes_the_phantom(phantom) -> None:
    """Issue 13 found QA failing every phantom image (a 734 HU overshoot along the body edge);
    the shipped CT x1 model leaves the step nearly as it is (largest change 268 HU)."""
    source, derived, _ = phantom
    verdict = assess(source, derived, limits=(-32768.0 - 1024, 32767.0 - 1024))
    assert verdict.verdict == "ok", verdict.reasons
