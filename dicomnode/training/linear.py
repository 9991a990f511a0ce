"""A least-squares linear filter: the reference a trained network has to beat.

Fitted on the same training pairs as SRCNN (input → target residual in the working range), a
`size` x `size` filter is the best any linear, shift-invariant method can do on that data. A
network that does not beat it has not learnt anything non-linear; and because it is cheap and
explainable it is also a candidate classical method.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dicomnode.imaging.degrade import Degradation, resample
from dicomnode.training.corpus import CorpusImage
from dicomnode.training.pairs import make_pair


@dataclass(frozen=True)
class LinearFilter:
    """residual = kernel ⊛ input + bias, in the working range, on the output grid."""

    kernel: np.ndarray  # (size, size) float32
    bias: float
    scale: int

    def apply(self, image: np.ndarray) -> np.ndarray:
        grid = image
        if self.scale > 1:
            rows, cols = image.shape
            grid = resample(image, (rows * self.scale, cols * self.scale))
        # cv2.filter2D correlates; the kernel was fitted as a correlation too
        residual = cv2.filter2D(
            grid.astype(np.float32), -1, self.kernel, borderType=cv2.BORDER_REFLECT
        )
        return (grid + residual + np.float32(self.bias)).astype(np.float32)


def fit_linear_filter(
    images: Sequence[CorpusImage],
    degradation: Degradation,
    *,
    size: int = 13,
    samples: int = 200_000,
    seed: int = 0,
) -> LinearFilter:
    """Least squares over `samples` random pixels of the training pairs (padding excluded)."""
    rng = np.random.default_rng(seed)
    pairs = [make_pair(image, degradation) for image in images]
    half = size // 2
    per_pair = max(1, samples // len(pairs))
    rows_x, rows_y = [], []
    for pair in pairs:
        padded = np.pad(pair.net_input, half, mode="reflect")
        residual = pair.target - pair.net_input
        valid = np.argwhere(~pair.source.padding[: residual.shape[0], : residual.shape[1]])
        if len(valid) == 0:
            continue
        picks = valid[rng.integers(0, len(valid), per_pair)]
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        rows_x.append(windows[picks[:, 0], picks[:, 1]].reshape(len(picks), -1))
        rows_y.append(residual[picks[:, 0], picks[:, 1]])
    x = np.concatenate(rows_x).astype(np.float64)
    y = np.concatenate(rows_y).astype(np.float64)
    x = np.hstack([x, np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(x, y, rcond=None)
    kernel = solution[:-1].reshape(size, size).astype(np.float32)
    return LinearFilter(kernel, float(solution[-1]), degradation.scale)


@dataclass(frozen=True)
class LinearMethod:
    """The fitted filter as an imaging `Method` (stacks of normalised images)."""

    filter: LinearFilter
    name: str = "linear"
    device: str = "CPU"
    model_sha256: str | None = None

    @property
    def scale(self) -> int:
        return self.filter.scale

    @property
    def version(self) -> str:
        return f"linear-{self.filter.kernel.shape[0]}-x{self.scale}"

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return np.stack([self.filter.apply(image) for image in stack])
