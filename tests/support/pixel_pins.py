"""Pinned pixels: what each shipped method makes of two small synthetic images, by version.

A method's version (ending in `PIXEL_REVISION`) is part of every derived UID, so the same
version must always give the same pixels: `tests/unit/test_pixel_revision.py` compares what the
methods make now with what they made when their version was pinned. The images hold what the
node's own code treats specially: CT padding in a corner (filled before the method), metal
beyond SRCNN's input range, an MR outlier beyond it too (the percentiles that set MR's working
range ignore it), and image content up to every border.

After a new model, new baseline defaults or a raised PIXEL_REVISION, pin the new versions:

    .venv/bin/python -m tests.support.pixel_pins
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from dicomnode.config import Settings
from dicomnode.imaging.enhance import Method, enhance_stack
from dicomnode.pipeline.methods import configured_methods

PINS = Path(__file__).resolve().parents[1] / "data" / "pixel_pins.npz"
MODALITIES = ("CT", "MR", "CR")  # CR: the model for any other modality
SCALES = (1, 2)
METHODS = ("srcnn", "baseline")


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
    """A 36x36 MR-like slice: dark background, two tissues with texture, one outlier pixel."""
    rows, cols = np.mgrid[0:36, 0:36].astype(np.float32)
    values = 20 + 5 * np.cos(rows + cols)
    head = np.hypot(rows - 18, cols - 18) < 15
    values[head] = 600 + 80 * np.sin(rows[head] / 2) * np.sin(cols[head] / 3)
    values[np.hypot(rows - 15, cols - 20) < 5] = 900
    values[9, 9] = 30_000
    return values.round()


def pinned_methods() -> list[tuple[str, Method]]:
    """(modality, method) for every method a default node runs, at each scale."""
    settings = Settings()
    cases = []
    for scale in SCALES:
        enhance = replace(settings.enhance, methods=list(METHODS), scale=scale, srcnn_views=1)
        scaled = replace(settings, enhance=enhance)
        for modality in MODALITIES:
            cases += [(modality, method) for method in configured_methods(scaled, modality)]
    return cases


def pin_key(modality: str, method: Method) -> str:
    return f"{modality}_{method.version}"


def output_of(modality: str, method: Method) -> np.ndarray:
    """The method's output in modality units, as `enhance_stack` gives it to the writer."""
    if modality == "CT":
        image, padding = ct_image()
        return enhance_stack(image[None], modality, method, padding=padding[None]).values[0]
    return enhance_stack(mr_image()[None], modality, method).values[0]


def main() -> None:
    # in 1/64 steps (exact in float32), far finer than the test's tolerance, so they compress
    pins = {
        pin_key(modality, m): np.round(output_of(modality, m) * 64) / 64
        for modality, m in pinned_methods()
    }
    np.savez_compressed(PINS, **pins)
    print(f"{PINS}: {len(pins)} pins")
    for key in sorted(pins):
        print(f"  {key}")


if __name__ == "__main__":
    main()
