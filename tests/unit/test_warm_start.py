"""The network can start as the least-squares linear filter: exactly, before any training."""

import numpy as np
import pytest

from dicomnode.imaging.srcnn import HALO, build_srcnn
from dicomnode.training.linear import LinearFilter
from dicomnode.training.warm_start import OFFSETS, SPAN, split_kernel, start_as_linear


def _full_convolution(part: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """A 9x9 part placed at its last-layer offset inside the 13x13 span."""
    out = np.zeros((SPAN, SPAN))
    dy, dx = offset
    out[dy + 2 : dy + 11, dx + 2 : dx + 11] = part
    return out


def test_the_parts_add_up_to_the_kernel() -> None:
    kernel = np.random.default_rng(1).normal(size=(SPAN, SPAN))
    parts = split_kernel(kernel)
    rebuilt = sum(_full_convolution(p, o) for p, o in zip(parts, OFFSETS, strict=True))
    assert np.array_equal(rebuilt, kernel)


def test_only_a_13_by_13_kernel_can_be_split() -> None:
    with pytest.raises(ValueError, match="13x13"):
        split_kernel(np.zeros((9, 9)))


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-0.2, 1.5)])
def test_the_started_network_is_the_linear_filter(low: float, high: float) -> None:
    rng = np.random.default_rng(0)
    linear = LinearFilter(rng.normal(0, 0.05, (SPAN, SPAN)).astype(np.float32), 0.01, 1)
    network = build_srcnn(1, seed=0)
    start_as_linear(network, linear)
    image = rng.uniform(low, high, (48, 64)).astype(np.float32)
    output = network.predict(image[None, ..., None], verbose=0)[0, ..., 0]
    inner = (slice(HALO, -HALO), slice(HALO, -HALO))  # borders: zero vs mirrored padding
    assert np.abs(output - linear.apply(image))[inner].max() < 1e-5
