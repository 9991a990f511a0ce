"""Start the 9-1-5 network as the least-squares linear filter, so training only adds to it.

A randomly initialised SRCNN first has to rediscover what a 13x13 linear filter already knows,
and on images unlike its training data (the soft-kernel GE head CT) it ends below that filter.
The network can hold the filter exactly: a 9x9 first layer followed by a 5x5 last layer spans a
13x13 kernel. Each offset `v` of the 5x5 kernel gets one channel whose 9x9 kernel is the part
of the 13x13 filter nearest that offset; the middle 1x1 layer passes those 25 channels through;
the last layer adds them back at their offsets. Biases lift every one of these channels above
zero for any input in `INPUT_BOUND`, so both ReLUs are the identity on them and the network
computes exactly `kernel ⊛ input + bias`. The other channels keep their random start and have a
last-layer weight of 0: they change nothing until training gives them a use.
"""

from typing import Any

import numpy as np

from dicomnode.imaging.srcnn import LAYERS
from dicomnode.training.linear import LinearFilter

# Working-range inputs the linear channels stay linear for (CT metal reaches ~1.5; margin).
INPUT_BOUND = 2.0
CENTRE = 0.5  # the network's first layer subtracts this (the "centre" rescaling)

FIRST, _, LAST = (size for _, size in LAYERS)
SPAN = FIRST + LAST - 1  # 13: the linear kernel the first and last layers can hold
_REACH = LAST // 2
OFFSETS = [(dy, dx) for dy in range(-_REACH, _REACH + 1) for dx in range(-_REACH, _REACH + 1)]


def split_kernel(kernel: np.ndarray) -> np.ndarray:
    """The SPANxSPAN `kernel` as one FIRSTxFIRST part per last-layer offset (OFFSETS order).

    Offset `w` of the kernel goes to the part of the offset nearest to it, `clip(w, ±2)`, where
    it sits at `w - v`, always within ±4: the parts add up to the kernel exactly.
    """
    if kernel.shape != (SPAN, SPAN):
        raise ValueError(f"a {SPAN}x{SPAN} kernel is needed, not {kernel.shape}")
    half, reach, first_half = SPAN // 2, _REACH, FIRST // 2
    parts = np.zeros((len(OFFSETS), FIRST, FIRST), np.float64)
    index = {offset: n for n, offset in enumerate(OFFSETS)}
    for wy in range(-half, half + 1):
        for wx in range(-half, half + 1):
            vy, vx = int(np.clip(wy, -reach, reach)), int(np.clip(wx, -reach, reach))
            parts[index[vy, vx], wy - vy + first_half, wx - vx + first_half] = kernel[
                wy + half, wx + half
            ]
    return parts


def start_as_linear(model: Any, linear: LinearFilter) -> None:
    """Set `model`'s weights (a fresh `build_srcnn` network) so it computes `linear`."""
    conv1, conv2, conv3 = (model.get_layer(f"conv{n}") for n in (1, 2, 3))
    w1, b1 = (np.array(v) for v in conv1.get_weights())
    w2, b2 = (np.array(v) for v in conv2.get_weights())
    w3, b3 = (np.array(v) for v in conv3.get_weights())
    parts = split_kernel(linear.kernel.astype(np.float64))
    count = len(parts)
    lifts = INPUT_BOUND * np.abs(parts).sum(axis=(1, 2))  # |part ⊛ (x - 0.5)| < lift
    w1[:, :, 0, :count] = np.moveaxis(parts, 0, -1)
    b1[:count] = lifts
    w2[0, 0, :, :count] = 0.0
    w2[0, 0, :count, :count] = np.eye(count)
    b2[:count] = 0.0
    w3[...] = 0.0
    for n, (dy, dx) in enumerate(OFFSETS):
        w3[dy + _REACH, dx + _REACH, n, 0] = 1.0
    # residual = kernel ⊛ (x - 0.5) + Σ lifts + b3 must equal kernel ⊛ x + bias
    b3[0] = linear.bias + CENTRE * float(linear.kernel.sum()) - float(lifts.sum())
    conv1.set_weights([w1, b1])
    conv2.set_weights([w2, b2])
    conv3.set_weights([w3, b3])
