"""How much noise an image holds, and where QA looks for it: Donoho's wavelet estimate (as
scikit-image's `estimate_sigma`) from the finest diagonal details of chosen regions.

Over the whole image a flat region (air clipped at -1024 HU, padding) decides the median: its
details are exactly zero where the value is 0 and ~1e-31 elsewhere, so the same air counted in
one image and not in the other made an output/source ratio anything from 0 to 1e30 (real CT
reformats with clipped air failed QA at 6-9x, and 20 HU added to such a body read as 1.0).
QA therefore compares the same details in the source and the output (`NoiseReference`): those
made of body pixels alone, and those made of the rest of the image (lungs, air, background;
padding left out), each against the source's noise there, never less than the body's.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pywt
from scipy.stats import norm

# The 75th percentile of the standard normal: |noise| has this median for a sigma of 1.
_NORMAL_QUARTILE = float(norm.ppf(0.75))

# Fewer details than this give a median that chance decides (a 5x5 body: one detail, and a
# third of the verdicts wrong); a region with fewer is not measured.
MIN_DETAILS = 64


def rounding_noise(step: float) -> float:
    """The standard deviation that rounding to a stored step of `step` adds (uniform over one
    step): less noise, or a smaller change, cannot be stored, so QA does not tell it apart."""
    return abs(step) / math.sqrt(12)


def finest_diagonal(image: np.ndarray) -> np.ndarray:
    """The finest diagonal wavelet details of a 2-D float64 image (db2, symmetric borders), as
    scikit-image's `estimate_sigma` takes them: only the two one-axis passes that lead to the
    diagonal band are made, each along rows of a transposed copy (PyWavelets is ~5x slower
    down columns). Detail (k, l) is made of rows 2k-2..2k+1 and columns 2l-2..2l+1."""
    _, down_columns = pywt.dwt(cv2.transpose(image), "db2", axis=1)
    diagonal: np.ndarray
    _, diagonal = pywt.dwt(cv2.transpose(down_columns), "db2", axis=1)
    return diagonal


def detail_positions(mask: np.ndarray) -> np.ndarray:
    """Which finest diagonal details (`finest_diagonal`) are made of `mask` pixels alone."""
    return _each_window(mask, np.logical_and.reduce)


def touching_positions(mask: np.ndarray) -> np.ndarray:
    """Which finest diagonal details any `mask` pixel goes into."""
    return _each_window(mask, np.logical_or.reduce)


def _each_window(mask: np.ndarray, combine: Callable[[list[np.ndarray]], np.ndarray]) -> np.ndarray:
    """`combine` (all or any) of `mask` over each detail's 4x4 window. Padded as pywt's
    symmetric borders, by 2 before and 3 after, detail k's rows 2k-2..2k+1 are padded rows
    2k..2k+3."""
    padded = np.pad(mask, ((2, 3), (2, 3)), mode="symmetric")
    rows, columns = ((side + 3) // 2 for side in mask.shape)  # pywt's detail grid
    by_rows = combine([padded[start : start + 2 * rows : 2] for start in range(4)])
    return combine([by_rows[:, start : start + 2 * columns : 2] for start in range(4)])


def noise_in(image: np.ndarray, positions: np.ndarray) -> float:
    """The wavelet noise estimate of a 2-D float64 image from its finest diagonal details at
    `positions`: scikit-image's `estimate_sigma` of those details (bit for bit where every
    position is taken and no detail is an exact zero, which scikit-image leaves out)."""
    return _noise_at(finest_diagonal(image), positions)


def _noise_at(diagonal: np.ndarray, positions: np.ndarray) -> float:
    details = np.abs(diagonal[positions])  # a new array: `_median` reorders it
    return _median(details) / _NORMAL_QUARTILE  # in float64, as scikit-image


def _median(values: np.ndarray) -> float:
    """`np.median` of a 1-D float64 array, bit for bit, from one partition in place (~5x
    faster; `values` is reordered); NaN for none, as numpy's, without its warning."""
    if not values.size:
        return math.nan
    middle = values.size // 2
    if values.size % 2:
        values.partition(middle)
        return float(values[middle])
    values.partition((middle - 1, middle))
    return float((values[middle - 1] + values[middle]) / 2)


def ratio(output: float, source: float) -> float:
    """output / source, where a source of 0 gives 1 for an output of 0, else infinity."""
    return output / source if source > 0 else (1.0 if output == 0 else math.inf)


@dataclass(frozen=True)
class NoiseReference:
    """Where QA tells a source's noise from, and how much it has there (`noise_reference`)."""

    body: np.ndarray  # detail positions in the body
    rest: np.ndarray | None  # in the rest of the image, padding aside; None: too few
    floor: float  # the rounding noise of one stored step: less is not told apart
    body_noise: float  # the source's, at least `floor`
    rest_noise: float  # the source's, at least `body_noise`

    def ratio(self, output: np.ndarray) -> float:
        """The output's noise over the source's: in the body, or in the rest where that is
        worse (noise a method spreads over the air or the background is harm too; a median
        does not see it in a small part of a region, such as the lungs beside more air)."""
        diagonal = finest_diagonal(output)
        worst = ratio(max(_noise_at(diagonal, self.body), self.floor), self.body_noise)
        if self.rest is not None:
            rest = max(_noise_at(diagonal, self.rest), self.floor)
            worst = max(worst, ratio(rest, self.rest_noise))
        return worst


def noise_reference(
    source: np.ndarray, body: np.ndarray, valid: np.ndarray, step: float = 0.0
) -> NoiseReference | None:
    """What `NoiseReference.ratio` compares an output with; None when the body has fewer than
    MIN_DETAILS details, even counting those its edge goes into (a sliver of a slice).

    `source` is 2-D float64; `body` and `valid` (not padding) are masks of it; `step` is the
    modality value of one stored step (the rescale slope): noise under its rounding noise
    (step / sqrt(12)) cannot be stored, so estimates are floored there and a noiseless
    source's ratio stays finite. The rest is compared with the source's noise there or the
    body's, whichever is more: clipped air, which has none, must not make any output's air
    look noisy."""
    inside = detail_positions(body)
    if np.count_nonzero(inside) < MIN_DETAILS:
        inside = touching_positions(body)
        if np.count_nonzero(inside) < MIN_DETAILS:
            return None
    outside = detail_positions(valid & ~body)
    rest = outside if np.count_nonzero(outside) >= MIN_DETAILS else None
    diagonal = finest_diagonal(source)
    floor = rounding_noise(step)
    body_noise = max(_noise_at(diagonal, inside), floor)
    rest_noise = body_noise if rest is None else max(_noise_at(diagonal, rest), body_noise)
    return NoiseReference(inside, rest, floor, body_noise, rest_noise)
