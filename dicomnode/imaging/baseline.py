"""The classical baseline: denoise, sharpen, optionally equalise contrast (OpenCV, scikit-image).

It is what the node must beat to justify a neural network, and a useful method on its own. It
works on a 2-D image in the network's working range (`normalize`), so its parameters mean the
same thing for every modality:

1. denoise: an edge-preserving filter whose strength is a multiple of the image's own noise level
   (scikit-image's wavelet estimate), so one setting suits a quiet MR and a noisy low-dose CT:
   `bilateral` (OpenCV, fast) or `nlm` (non-local means, scikit-image; slower, stronger);
2. unsharp mask: x + amount * (x - gaussian(x, sigma)), restoring edges the denoiser softened;
3. CLAHE (off by default): it changes intensities, so CT numbers stop meaning Hounsfield units.

For `scale > 1` the image is first resampled to the output grid with the shared cubic
interpolator (`degrade.resample`), then filtered.
"""

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from skimage.exposure import equalize_adapthist
from skimage.restoration import denoise_nl_means, estimate_sigma

from dicomnode.imaging.degrade import resample

Denoiser = Literal["bilateral", "nlm", "none"]


@dataclass(frozen=True)
class BaselineParams:
    """Defaults were tuned on the training series (see models/MODEL_CARD.md)."""

    denoise: Denoiser = "bilateral"
    denoise_strength: float = 1.5  # x the estimated noise standard deviation
    unsharp_amount: float = 1.0
    unsharp_sigma: float = 0.7  # pixels
    clahe_clip: float = 0.0  # 0 = off; else skimage's clip_limit, e.g. 0.01

    def __post_init__(self) -> None:
        if self.denoise not in ("bilateral", "nlm", "none"):
            raise ValueError(f"denoise must be bilateral, nlm or none, not {self.denoise!r}")
        for name in ("denoise_strength", "unsharp_amount", "clahe_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.unsharp_sigma <= 0:
            raise ValueError("unsharp_sigma must be > 0")


def _denoise(image: np.ndarray, params: BaselineParams) -> np.ndarray:
    if params.denoise == "none" or params.denoise_strength == 0:
        return image
    sigma = float(estimate_sigma(image))
    if sigma <= 0:
        return image
    if params.denoise == "bilateral":
        # 5x5 neighbourhood; only intensity differences within a few noise sigmas are averaged.
        filtered: np.ndarray = cv2.bilateralFilter(
            image, d=5, sigmaColor=params.denoise_strength * sigma, sigmaSpace=1.5
        )
        return filtered
    denoised: np.ndarray = denoise_nl_means(
        image,
        h=0.6 * params.denoise_strength * sigma,
        sigma=sigma,
        patch_size=5,
        patch_distance=6,
        fast_mode=True,
        preserve_range=True,
    )
    return denoised.astype(np.float32)


def _unsharp(image: np.ndarray, params: BaselineParams) -> np.ndarray:
    if params.unsharp_amount == 0:
        return image
    blurred = cv2.GaussianBlur(
        image, (0, 0), sigmaX=params.unsharp_sigma, borderType=cv2.BORDER_REFLECT
    )
    sharpened: np.ndarray = image + np.float32(params.unsharp_amount) * (image - blurred)
    return sharpened


def _clahe(image: np.ndarray, params: BaselineParams) -> np.ndarray:
    if params.clahe_clip == 0:
        return image
    inside = np.clip(image, 0.0, 1.0)
    equalised = equalize_adapthist(inside, clip_limit=params.clahe_clip).astype(np.float32)
    # Values outside the working range (rare: beyond the percentiles or the HU range) are kept.
    return np.where((image >= 0) & (image <= 1), equalised, image)


def enhance_baseline(
    image: np.ndarray, params: BaselineParams | None = None, *, scale: int = 1
) -> np.ndarray:
    """The baseline's output for one normalised 2-D image, on the grid `scale` x its own."""
    params = params or BaselineParams()
    image = np.ascontiguousarray(image, dtype=np.float32)
    if scale > 1:
        image = resample(image, (image.shape[0] * scale, image.shape[1] * scale))
    return _clahe(_unsharp(_denoise(image, params), params), params)
