"""Training pairs: (what the network sees, what it should output), made by the shared degradation.

The input is built exactly as at inference: degrade the reference (`degrade`), normalise the
degraded image with its own working range, and for scale > 1 upsample it with the shared cubic
interpolator. The target is the reference in the same working range. Patches are cut from these
full-size pairs, so degradation never sees a patch border.
"""

from dataclasses import dataclass

import numpy as np

from dicomnode.imaging.degrade import Degradation, crop_to_multiple, degrade, resample
from dicomnode.imaging.normalize import fill_padding, normalization_for, normalize
from dicomnode.training.corpus import CorpusImage

MIN_PATCH_STD = 0.01  # in the working range: "structured" patches (edges, texture)
STRUCTURED_FRACTION = 0.5  # the rest is drawn anywhere, so flat areas are learnt to stay flat


@dataclass(frozen=True)
class Pair:
    source: CorpusImage
    net_input: np.ndarray  # normalised, on the reference grid
    target: np.ndarray  # normalised reference


def make_pair(image: CorpusImage, degradation: Degradation) -> Pair:
    padding = crop_to_multiple(image.padding, degradation.scale)
    reference = fill_padding(
        crop_to_multiple(image.values, degradation.scale), padding, image.modality
    )
    low = degrade(reference, degradation)
    low_padding = padding[:: degradation.scale, :: degradation.scale]
    norm = normalization_for(low, image.modality, low_padding)
    net_input = normalize(low, norm)
    if degradation.scale > 1:
        net_input = resample(net_input, reference.shape)
    return Pair(image, net_input, normalize(reference, norm))


def sample_patches(
    pairs: list[Pair], count: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (input, target) patches of `size`², shaped (count, size, size, 1)."""
    usable = [p for p in pairs if min(p.target.shape) >= size]
    if not usable:
        raise ValueError(f"no image is at least {size} px on each side")
    weights = np.array([p.target.size for p in usable], float)
    weights /= weights.sum()
    inputs = np.empty((count, size, size, 1), np.float32)
    targets = np.empty_like(inputs)
    for n in range(count):
        attempts = 20 if n < count * STRUCTURED_FRACTION else 1
        for _attempt in range(attempts):
            pair = usable[rng.choice(len(usable), p=weights)]
            r = int(rng.integers(0, pair.target.shape[0] - size + 1))
            c = int(rng.integers(0, pair.target.shape[1] - size + 1))
            target = pair.target[r : r + size, c : c + size]
            if target.std() >= MIN_PATCH_STD:
                break
        inputs[n, ..., 0] = pair.net_input[r : r + size, c : c + size]
        targets[n, ..., 0] = target
    return inputs, targets
