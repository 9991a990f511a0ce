"""Pinned pixels: what each shipped method makes of small synthetic images, by version.

A method's version (ending in `PIXEL_REVISION`) is part of every derived UID, so the same
version must always give the same pixels: `tests/unit/test_pixel_revision.py` compares what the
methods make now with what they made when their version was pinned, and what `to_stored` makes
of the pinned values with the stored values pinned beside them. The images hold what the node's
own code treats specially: CT padding in a corner (filled before the method, restored after),
metal beyond SRCNN's input range, an outlier beyond it too in the others (the percentiles that
set their working range ignore it), a MONOCHROME1 CR, a rescale slope, stored values past
their bits, and image content up to every border.

The cases are what a default node runs (SRCNN with each shipped model, the baseline) at x1 and
x2, SRCNN also over 8 views (a GPU's default) and the baseline also with non-local means and
CLAHE. After a new model, new baseline defaults or a raised PIXEL_REVISION, pin the new
versions on a CPU:

    .venv/bin/python -m tests.support.pixel_pins
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dicomnode.config import Settings
from dicomnode.imaging.baseline import BaselineParams
from dicomnode.imaging.enhance import BaselineMethod, Method, SrcnnMethod, enhance_stack
from dicomnode.imaging.pixels import PixelDomain, to_stored
from dicomnode.pipeline.derived_output import upsampled
from dicomnode.pipeline.methods import configured_methods

PINS = Path(__file__).resolve().parents[1] / "data" / "pixel_pins.npz"
SCALES = (1, 2)


def ct_image() -> tuple[np.ndarray, np.ndarray]:
    """(HU, padding) of a 40x40 slice: textured soft tissue, bone, an air pocket, metal at
    26,000 HU (extended CT scale: beyond SRCNN's input range, also when upsampled) and -2048
    padding in a corner."""
    rows, cols = np.mgrid[0:40, 0:40].astype(np.float32)
    hu = 40 + 30 * np.sin(cols / 3) * np.cos(rows / 4)
    hu[np.hypot(rows - 22, cols - 24) < 7] = 700
    hu[np.hypot(rows - 28, cols - 10) < 3] = -900
    hu[20:22, 24:26] = 26_000
    padding = rows + cols < 9
    hu[padding] = -2048
    return hu.round(), padding


def mr_image() -> np.ndarray:
    """A 36x36 slice: dark background, two tissues with texture, one outlier pixel."""
    rows, cols = np.mgrid[0:36, 0:36].astype(np.float32)
    values = 20 + 5 * np.cos(rows + cols)
    head = np.hypot(rows - 18, cols - 18) < 15
    values[head] = 600 + 80 * np.sin(rows[head] / 2) * np.sin(cols[head] / 3)
    values[np.hypot(rows - 15, cols - 20) < 5] = 900
    values[9, 9] = 30_000
    return values.round()


def _domain(bits_stored: int, signed: bool, slope: float, photometric: str) -> PixelDomain:
    return PixelDomain(16, bits_stored, signed, slope, 0.0, photometric, None, None)


@dataclass(frozen=True)
class Image:
    """A synthetic source: its modality values, padding, and how they are stored."""

    modality: str
    values: np.ndarray
    padding: np.ndarray
    domain: PixelDomain

    @property
    def stored_padding(self) -> np.ndarray:
        return np.rint(self.values / self.domain.slope).astype(self.domain.dtype)


def images() -> list[Image]:
    ct, padding = ct_image()
    mr, none = mr_image(), np.zeros((36, 36), bool)
    return [
        Image("CT", ct, padding, _domain(16, True, 1.0, "MONOCHROME2")),
        # a slope of 2, and 12 bits: the outlier (30,000) is past what they store
        Image("MR", mr, none, _domain(12, False, 2.0, "MONOCHROME2")),
        # the model for any other modality, on an image whose low values display white
        Image("CR", mr, none, _domain(16, False, 1.0, "MONOCHROME1")),
    ]


@dataclass(frozen=True)
class Case:
    """One method on one image; its pins are keyed by the image's modality and the version."""

    image: Image
    method: Method

    @property
    def key(self) -> str:
        return f"{self.image.modality}_{self.method.version}"

    def output(self) -> np.ndarray:
        """The method's output in modality units, as `enhance_stack` gives it to the writer."""
        image = self.image
        return enhance_stack(
            image.values[None],
            image.modality,
            self.method,
            padding=image.padding[None],
            inverted=image.domain.inverted,
        ).values[0]

    def stored(self, values: np.ndarray) -> np.ndarray:
        """`values` as the derived image stores them (padding restored, as the writer does)."""
        image, scale = self.image, self.method.scale
        padding = upsampled(image.padding, scale)
        return to_stored(values, image.domain, padding, upsampled(image.stored_padding, scale))


def cases() -> list[Case]:
    settings = Settings()
    found = []
    for scale in SCALES:
        enhance = replace(settings.enhance, methods=["srcnn", "baseline"], scale=scale)
        scaled = replace(settings, enhance=replace(enhance, srcnn_views=1))
        for image in images():
            methods = configured_methods(scaled, image.modality)
            srcnn = next(m for m in methods if isinstance(m, SrcnnMethod))
            methods.append(SrcnnMethod(srcnn.runner, views=8))
            if image.modality == "MR":
                tuned = BaselineParams(denoise="nlm", clahe_clip=0.01)
                methods.append(BaselineMethod(tuned, scale=scale))
            found += [Case(image, method) for method in methods]
    return found


def main() -> None:
    pins: dict[str, np.ndarray] = {}
    for case in cases():
        values = case.output()
        pins[case.key] = values
        pins[f"{case.key}.stored"] = case.stored(values)
    np.savez_compressed(PINS, **pins)
    print(f"{PINS}: {len(pins) // 2} cases")
    for key in sorted(pins):
        print(f"  {key}")


if __name__ == "__main__":
    main()
