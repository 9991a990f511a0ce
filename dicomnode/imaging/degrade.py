"""The degradation model shared by training, evaluation and the per-image self-check.

One seeded, documented way to make a worse image from a good one, so that "the method's gain
over bicubic" means the same thing everywhere:

* scale s > 1: anti-aliased cubic downsampling by s (the low-resolution input);
* scale 1: Gaussian blur (sigma `blur_sigma` pixels), then a cubic down/up cycle by 2 (the
  degraded input on the native grid);
* optionally, Gaussian noise with standard deviation `noise_fraction` x the image's data range.

Cubic (order 3) interpolation from scikit-image is used for every resampling, up and down.
"""

from dataclasses import dataclass

import numpy as np
from skimage.filters import gaussian
from skimage.transform import resize

CUBIC = 3


@dataclass(frozen=True)
class Degradation:
    scale: int = 2
    blur_sigma: float = 1.0
    noise_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scale not in (1, 2, 3, 4):
            raise ValueError(f"scale must be 1, 2, 3 or 4, not {self.scale}")
        if self.blur_sigma < 0 or self.noise_fraction < 0:
            raise ValueError("blur_sigma and noise_fraction must be >= 0")


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """Drop the last rows/columns so both sides divide by `scale` (grids then align exactly)."""
    rows, cols = image.shape[-2:]
    return image[..., : rows - rows % scale, : cols - cols % scale]


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cubic resampling of a 2-D float image to `shape`, anti-aliased when shrinking."""
    shrinking = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    resized: np.ndarray = resize(
        image.astype(np.float64),
        shape,
        order=CUBIC,
        mode="reflect",
        anti_aliasing=shrinking,
        preserve_range=True,
    )
    return resized.astype(np.float32)


def degrade(image: np.ndarray, model: Degradation) -> np.ndarray:
    """The degraded version of a 2-D image: low resolution for scale > 1, same grid for 1."""
    if model.scale > 1:
        image = crop_to_multiple(image, model.scale)
        rows, cols = image.shape
        out = resample(image, (rows // model.scale, cols // model.scale))
    else:
        blurred = (
            gaussian(image.astype(np.float64), sigma=model.blur_sigma, preserve_range=True)
            if model.blur_sigma
            else image
        )
        rows, cols = image.shape
        out = resample(resample(blurred, (max(1, rows // 2), max(1, cols // 2))), (rows, cols))
    if model.noise_fraction:
        spread = float(np.ptp(image)) * model.noise_fraction
        rng = np.random.default_rng(model.seed)
        out = out + rng.normal(0.0, spread, out.shape).astype(np.float32)
    return out


def bicubic_restore(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The baseline every method must beat: cubic upsampling of the degraded image."""
    return resample(low, shape) if low.shape != shape else low.astype(np.float32)
