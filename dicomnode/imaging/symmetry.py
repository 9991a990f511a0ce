"""Averaging a network over the flips and quarter turns of its input (geometric self-ensemble).

A convolutional network trained on randomly turned patches is nearly, not exactly, indifferent to
how an image is turned: its errors differ from one orientation to another. Run on each of the
square's symmetries of an image, turned back and averaged (Timofte et al. 2016, "Seven ways to
improve example-based single image super resolution"; Lim et al. 2017, EDSR), part of those
errors cancel, and the result no longer depends on whether the image was stored flipped or
turned. Each view costs one more forward pass.

The views are ordered so that the first 2, 4 or 8 form a group (identity and a mirror; the four
that keep an image's shape; all eight): averaged over a group, the result is exactly equivariant
under it.
"""

from collections.abc import Callable

import numpy as np

# (quarter turns, mirrored left-right)
_VIEWS = (
    (0, False),  # as it is
    (0, True),  # mirrored: with the first, a group of 2
    (2, True),  # upside down
    (2, False),  # half turn: with the first three, the 4 views that keep the shape
    (1, False),
    (1, True),
    (3, False),
    (3, True),  # the quarter turns, plain and mirrored: all 8
)
VIEW_COUNTS = (1, 2, 4, 8)
AUTO = 0  # as many views as the device makes cheap: `views_for`
GPU_VIEWS = 8


def views_for(views: int, on_gpu: bool) -> int:
    """`views`, or for AUTO: all 8 on a GPU, where the passes cost milliseconds a slice, and 1 on
    a CPU, where each one costs as much as the single pass (8 would make a job ~3x longer)."""
    if views == AUTO:
        return GPU_VIEWS if on_gpu else 1
    if views not in VIEW_COUNTS:
        raise ValueError(f"views must be one of {VIEW_COUNTS} or {AUTO} (auto), not {views}")
    return views


def turned(image: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """An image (or a stack of them: the last two axes) turned `turns` quarter turns, then
    mirrored left-right if asked; a view, not a copy."""
    out = np.rot90(image, turns, axes=(-2, -1))
    return out[..., ::-1] if mirrored else out


def _through(
    restore: Callable[[np.ndarray], np.ndarray], stack: np.ndarray, turns: int, mirrored: bool
) -> np.ndarray:
    """`restore` of the stack so turned (a strided view: `restore` copies it as it needs, as
    SRCNN's mirrored padding does anyway), turned back."""
    out = restore(turned(stack, turns, mirrored))
    return np.rot90(out[..., ::-1] if mirrored else out, -turns, axes=(-2, -1))


def averaged_over_views(
    restore: Callable[[np.ndarray], np.ndarray], stack: np.ndarray, views: int
) -> np.ndarray:
    """The mean of `restore` over the first `views` symmetries of a (N, H, W) stack, each
    output turned back; `restore` itself, untouched, for one view."""
    if views not in VIEW_COUNTS:
        raise ValueError(f"views must be one of {VIEW_COUNTS}, not {views}")
    if views == 1:
        return restore(stack)
    first, *rest = _VIEWS[:views]
    total = np.array(_through(restore, stack, *first), dtype=np.float32)
    for turns, mirrored in rest:
        total += _through(restore, stack, turns, mirrored)
    return total / np.float32(views)
