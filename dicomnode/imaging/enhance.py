"""One call from modality values to an enhanced image, whatever the method, with its provenance.

A `Method` works on a stack of normalised 2-D images and may change the grid by its `scale`.
`enhance_stack` fills each image's padding (`fill_padding`), normalises it (its own
`Normalization`, recorded), runs the method once
on the whole stack (so SRCNN batches), and maps the outputs back to modality units. The result
says which method, model version and device produced it, and how long it took.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dicomnode.imaging.baseline import BaselineParams, enhance_baseline
from dicomnode.imaging.normalize import (
    Normalization,
    denormalize,
    fill_padding,
    normalization_for,
    normalize,
)
from dicomnode.imaging.srcnn import SrcnnRunner
from dicomnode.imaging.symmetry import views_for

# What the node's own code does to the pixels, beyond the model or parameters a method's version
# names: filling the padding, the working range and the way back, SRCNN's mirrored border and
# input range. Every method's version ends in it, so it is part of every derived UID: raise it
# with any change that gives other pixels for the same input, or a PACS that already holds a
# derived series is sent other pixels under its UIDs (and many keep the first copy). Revision 1 was
# everything before this number existed; `tests/unit/test_pixel_revision.py` fails when pixels
# change and it does not.
PIXEL_REVISION = 2


def revised(version: str) -> str:
    """A method's own version with the node's pixel revision: what its derived UIDs use."""
    return f"{version}-r{PIXEL_REVISION}"


def is_revised(version: str) -> bool:
    return version.endswith(f"-r{PIXEL_REVISION}")


class Method(Protocol):
    """A runnable enhancement; `version` goes into every derived UID, so it names the model or
    parameters exactly (and ends in the pixel revision: `revised`)."""

    name: str
    scale: int
    version: str
    device: str
    model_sha256: str | None  # the model file's hash, for methods that load one

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        """(N, H, W) normalised → (N, H*scale, W*scale) normalised."""
        ...


@dataclass(frozen=True)
class BaselineMethod:
    params: BaselineParams
    scale: int = 1
    name: str = "baseline"
    device: str = "CPU"
    model_sha256: str | None = None

    @property
    def version(self) -> str:
        p = self.params
        return revised(
            f"baseline-{p.denoise}-{p.denoise_strength:g}-{p.unsharp_amount:g}-"
            f"{p.unsharp_sigma:g}-{p.clahe_clip:g}-x{self.scale}"
        )

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return np.stack([enhance_baseline(image, self.params, scale=self.scale) for image in stack])


class SrcnnMethod:
    name = "srcnn"

    def __init__(self, runner: SrcnnRunner, *, views: int = 1) -> None:
        """`views`: averaged over this many flips and quarter turns (`symmetry`); AUTO (0):
        8 on a GPU, 1 on a CPU."""
        self.runner = runner
        self.views = views_for(views, on_gpu=runner.device.startswith("/GPU"))
        self.scale = runner.model.scale
        # The version names what made the pixels: it is part of the derived UIDs, so another
        # number of views must not reuse the UIDs of the model's plain output.
        suffix = f"-views{self.views}" if self.views > 1 else ""
        self.version = revised(runner.model.version + suffix)
        self.model_sha256: str | None = runner.model.sha256
        self.device = runner.device_description

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return self.runner.enhance(stack, views=self.views)


@dataclass(frozen=True)
class EnhancementResult:
    values: np.ndarray  # (N, H*scale, W*scale) float32, modality units
    normalizations: tuple[Normalization, ...]
    method: str
    version: str
    scale: int
    device: str
    seconds: float


def enhance_stack(
    images: np.ndarray,
    modality: str,
    method: Method,
    *,
    padding: np.ndarray | None = None,
    inverted: bool | Sequence[bool] = False,
) -> EnhancementResult:
    """Enhance a (N, H, W) stack of modality values (one DICOM series or multi-frame image);
    `inverted`: the images (or which of them) are MONOCHROME1 (`normalize` turns them for the
    method)."""
    start = time.perf_counter()
    stack = np.asarray(images, dtype=np.float32)
    masks: Sequence[np.ndarray | None] = (
        list(padding) if padding is not None else [None] * len(stack)
    )
    turned = [inverted] * len(stack) if isinstance(inverted, bool) else list(inverted)
    stack = np.stack(
        [
            fill_padding(image, mask, modality, inverted=flag)
            for image, mask, flag in zip(stack, masks, turned, strict=True)
        ]
    )
    norms = tuple(
        normalization_for(image, modality, mask, inverted=flag)
        for image, mask, flag in zip(stack, masks, turned, strict=True)
    )
    normalised = np.stack(
        [normalize(image, norm) for image, norm in zip(stack, norms, strict=True)]
    )
    output = method(normalised)
    values = np.stack([denormalize(image, norm) for image, norm in zip(output, norms, strict=True)])
    return EnhancementResult(
        values=values,
        normalizations=norms,
        method=method.name,
        version=method.version,
        scale=method.scale,
        device=method.device,
        seconds=time.perf_counter() - start,
    )
