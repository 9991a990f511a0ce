"""Training pairs: (what the network sees, what it should output), made by the shared degradation.

The input is built exactly as at inference: fill the padding (`fill_padding`), degrade the
reference (`degrade`), normalise the degraded image with its own working range, and for scale > 1
upsample it with the shared cubic interpolator. The target is the reference in the same working
range. Patches are cut from these full-size pairs, so degradation never sees a patch border.

`PatchSampler` draws fresh patches for every batch, each turned by one of the eight symmetries of
the square (flips and quarter turns), so no patch is seen twice and no orientation is favoured.
At scale 1 it also adds Gaussian noise of up to `noise_factor` times the image's own estimated
noise to the input: real inputs are noisy, and a restoration network that never saw noise
learns to sharpen it.

With `contrast_min` < 1, half of the patches have their contrast lowered around their mean by a
log-uniform factor down to `contrast_min`, input and target alike (before any noise). The
degradations are linear, so a fainter patch is as true a pair as the original; without these a
network trained on chest and body CT (lung against soft tissue: ~1,000 HU) leaves the faint
detail of other images (brain: tens of HU) as it found it, where a linear filter sharpens it.

With `clean_fraction` > 0 (scale 1), that share of the patches is left undegraded: the input is
the target itself, with its own noise and no more. The node applies an x1 model to images as they
were acquired, never blurred by the degradation model; a network that has only ever seen degraded
inputs sharpens those too (its QA sharpness ratio on real CT is 4-7), one that has also seen clean
ones can learn to leave them as they are.
"""

from dataclasses import dataclass

import numpy as np
from skimage.filters import gaussian
from skimage.restoration import estimate_sigma

from dicomnode.imaging.degrade import Degradation, crop_to_multiple, degrade, resample
from dicomnode.imaging.normalize import fill_padding, normalization_for, normalize
from dicomnode.imaging.symmetry import turned
from dicomnode.training.corpus import CorpusImage

MIN_PATCH_STD = 0.01  # in the working range: "structured" patches (edges, texture)
STRUCTURED_FRACTION = 0.5  # the rest is drawn anywhere, so flat areas are learnt to stay flat


@dataclass(frozen=True)
class Pair:
    source: CorpusImage
    net_input: np.ndarray  # normalised, on the reference grid
    target: np.ndarray  # normalised reference
    noise: float  # the reference's estimated noise standard deviation, working range


def make_pair(image: CorpusImage, degradation: Degradation, soften: float = 0.0) -> Pair:
    """The pair of `image`; with `soften` > 0 of the image blurred by that sigma (px) first,
    as a softer reconstruction kernel would have made it."""
    padding = crop_to_multiple(image.padding, degradation.scale)
    reference = fill_padding(
        crop_to_multiple(image.values, degradation.scale),
        padding,
        image.modality,
        inverted=image.inverted,
    )
    if soften > 0:
        reference = gaussian(reference.astype(np.float64), sigma=soften, preserve_range=True)
    low = degrade(reference, degradation)
    low_padding = padding[:: degradation.scale, :: degradation.scale]
    norm = normalization_for(low, image.modality, low_padding, inverted=image.inverted)
    net_input = normalize(low, norm)
    if degradation.scale > 1:
        net_input = resample(net_input, reference.shape)
    target = normalize(reference, norm)
    return Pair(image, net_input, target, float(estimate_sigma(target)))


def _usable(pairs: list[Pair], size: int) -> tuple[list[Pair], np.ndarray]:
    usable = [p for p in pairs if min(p.target.shape) >= size]
    if not usable:
        raise ValueError(f"no image is at least {size} px on each side")
    weights = np.array([p.target.size for p in usable], float)
    return usable, weights / weights.sum()


def _draw(
    usable: list[Pair], weights: np.ndarray, size: int, rng: np.random.Generator, tries: int
) -> tuple[Pair, np.ndarray, np.ndarray]:
    """One (pair, input, target) patch; up to `tries` draws to find a structured one."""
    for _attempt in range(tries):
        pair = usable[rng.choice(len(usable), p=weights)]
        r = int(rng.integers(0, pair.target.shape[0] - size + 1))
        c = int(rng.integers(0, pair.target.shape[1] - size + 1))
        target = pair.target[r : r + size, c : c + size]
        if target.std() >= MIN_PATCH_STD:
            break
    return pair, pair.net_input[r : r + size, c : c + size], target


def sample_patches(
    pairs: list[Pair], count: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (input, target) patches of `size`², shaped (count, size, size, 1)."""
    usable, weights = _usable(pairs, size)
    inputs = np.empty((count, size, size, 1), np.float32)
    targets = np.empty_like(inputs)
    for n in range(count):
        tries = 20 if n < count * STRUCTURED_FRACTION else 1
        _, inputs[n, ..., 0], targets[n, ..., 0] = _draw(usable, weights, size, rng, tries)
    return inputs, targets


class PatchSampler:
    """Fresh, randomly turned patches for every batch; reproducible from its seed."""

    def __init__(
        self,
        pairs: list[Pair],
        size: int,
        batch_size: int,
        *,
        seed: int,
        noise_factor: float = 0.0,
        contrast_min: float = 1.0,
        clean_fraction: float = 0.0,
    ) -> None:
        self.usable, self.weights = _usable(pairs, size)
        self.size, self.batch_size, self.noise_factor = size, batch_size, noise_factor
        self.contrast_min, self.clean_fraction = contrast_min, clean_fraction
        self.seed = seed

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch number `index` (the same index always gives the same batch)."""
        rng = np.random.default_rng((self.seed, index))
        noise_rng = np.random.default_rng((self.seed, index, 1))  # the same patches either way
        contrast_rng = np.random.default_rng((self.seed, index, 2))
        clean_rng = np.random.default_rng((self.seed, index, 3))
        inputs = np.empty((self.batch_size, self.size, self.size, 1), np.float32)
        targets = np.empty_like(inputs)
        for n in range(self.batch_size):
            tries = 20 if n < self.batch_size * STRUCTURED_FRACTION else 1
            pair, net_input, target = _draw(self.usable, self.weights, self.size, rng, tries)
            if self.contrast_min < 1.0 and contrast_rng.uniform() < 0.5:
                gain = np.exp(contrast_rng.uniform(np.log(self.contrast_min), 0.0))
                centre = target.mean()
                net_input = centre + gain * (net_input - centre)
                target = centre + gain * (target - centre)
            if self.clean_fraction and clean_rng.uniform() < self.clean_fraction:
                net_input = target  # as acquired: nothing to undo
            elif self.noise_factor:
                sigma = noise_rng.uniform(0.0, self.noise_factor) * pair.noise
                net_input = net_input + noise_rng.normal(0.0, sigma, net_input.shape)
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            inputs[n, ..., 0] = turned(net_input, turns, flip)
            targets[n, ..., 0] = turned(target, turns, flip)
        return inputs, targets
