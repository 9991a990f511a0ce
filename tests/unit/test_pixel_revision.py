"""The same derived UIDs never name other pixels (`enhance.PIXEL_REVISION`).

Derived UIDs are made from the source's UID and the method's version, so a series sent again
gets the UIDs it got before, and the PACS replaces its copy (or keeps the first, as Orthanc does
by default). That is right only while the same version gives the same pixels: a change to the
node's pixel code that does not raise PIXEL_REVISION would leave a PACS holding old pixels under
UIDs it is sent new ones for. Each method a default node runs is compared with the pixels
pinned for its version (`tests/support/pixel_pins.py`).
"""

import numpy as np
import pytest

import dicomnode.imaging.srcnn as srcnn_module
from dicomnode.imaging.enhance import PIXEL_REVISION, Method
from tests.support.pixel_pins import PINS, output_of, pin_key, pinned_methods

# A quarter of one stored step of these images (1 HU, 1 unit): another CPU's rounding is far
# below it, and anything that could change a stored value is not.
TOLERANCE = 0.25
REPIN = "pin it with `.venv/bin/python -m tests.support.pixel_pins`"


@pytest.fixture(scope="module")
def pins() -> dict[str, np.ndarray]:
    with np.load(PINS) as stored:
        return {key: stored[key] for key in stored.files}


@pytest.fixture(scope="module")
def methods() -> list[tuple[str, Method]]:
    return pinned_methods()


def test_every_method_ends_its_version_in_the_pixel_revision(
    methods: list[tuple[str, Method]],
) -> None:
    assert {m.name for _, m in methods} == {"srcnn", "baseline"}
    assert all(m.version.endswith(f"-r{PIXEL_REVISION}") for _, m in methods)


def test_each_version_gives_the_pixels_pinned_for_it(
    methods: list[tuple[str, Method]], pins: dict[str, np.ndarray]
) -> None:
    unpinned = [pin_key(modality, m) for modality, m in methods if pin_key(modality, m) not in pins]
    assert not unpinned, f"no pixels pinned for {unpinned} (a new model or revision?): {REPIN}"
    for modality, method in methods:
        now, pinned = output_of(modality, method), pins[pin_key(modality, method)]
        worst = float(np.max(np.abs(now - pinned)))
        assert worst <= TOLERANCE, (
            f"{pin_key(modality, method)}: pixels differ from those pinned for this version by "
            f"up to {worst:.3g}; a change to what the node makes of pixels raises "
            f"enhance.PIXEL_REVISION (then {REPIN})"
        )


def test_the_pins_see_a_change_of_srcnn_input_range(
    monkeypatch: pytest.MonkeyPatch, methods: list[tuple[str, Method]], pins: dict[str, np.ndarray]
) -> None:
    """The change that made revision 2: without the clipped input, metal and outlier pixels
    change the output around them, and the pins say so (for every model)."""
    monkeypatch.setattr(srcnn_module, "INPUT_RANGE", (-1e9, 1e9))
    for modality, method in methods:
        if method.name == "srcnn":
            now, pinned = output_of(modality, method), pins[pin_key(modality, method)]
            assert float(np.max(np.abs(now - pinned))) > TOLERANCE, pin_key(modality, method)
