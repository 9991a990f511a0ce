"""The same derived UIDs never name other pixels (`enhance.PIXEL_REVISION`).

Derived UIDs are made from the source's UID and the method's version, so a series sent again
gets the UIDs it got before, and the PACS replaces its copy (or keeps the first, as Orthanc does
by default). That is right only while the same version gives the same pixels: a change to the
node's pixel code that does not raise PIXEL_REVISION would leave a PACS holding old pixels under
UIDs it is sent new ones for. Each case of `tests/support/pixel_pins.py` is compared with the
pixels pinned for its version.
"""

import numpy as np
import pytest

import dicomnode.imaging.srcnn as srcnn_module
from dicomnode.imaging.enhance import PIXEL_REVISION
from tests.support.pixel_pins import PINS, Case, cases

# Another CPU's rounding moved these outputs by at most 0.002 (measured with and without
# oneDNN, on one thread and two); a change of 0.05 moves some stored values of a large image.
TOLERANCE = 0.05
REPIN = "pin it with `.venv/bin/python -m tests.support.pixel_pins` on a CPU"


@pytest.fixture(scope="module")
def pins() -> dict[str, np.ndarray]:
    with np.load(PINS) as stored:
        return {key: stored[key] for key in stored.files}


@pytest.fixture(scope="module")
def pinned() -> list[Case]:
    return cases()


def test_the_cases_cover_each_method_and_every_version_ends_in_the_revision(
    pinned: list[Case],
) -> None:
    versions = {case.method.version for case in pinned}
    assert {case.method.name for case in pinned} == {"srcnn", "baseline"}
    assert any("-views8-" in v for v in versions) and any("-nlm-" in v for v in versions)
    assert all(v.endswith(f"-r{PIXEL_REVISION}") for v in versions)


def test_each_version_gives_the_pixels_pinned_for_it(
    pinned: list[Case], pins: dict[str, np.ndarray]
) -> None:
    unpinned = [case.key for case in pinned if case.key not in pins]
    assert not unpinned, f"no pixels pinned for {unpinned} (a new model or revision?): {REPIN}"
    for case in pinned:
        worst = float(np.max(np.abs(case.output() - pins[case.key])))
        assert worst <= TOLERANCE, (
            f"{case.key}: pixels differ from those pinned for this version by up to "
            f"{worst:.3g}; a change to what the node makes of pixels raises "
            f"enhance.PIXEL_REVISION (then {REPIN})"
        )


def test_the_pinned_values_are_stored_as_they_were(
    pinned: list[Case], pins: dict[str, np.ndarray]
) -> None:
    """The way back to stored values (rescale, bits, padding put back) is exact arithmetic on
    the pinned values: it must give the pinned stored values bit for bit."""
    for case in pinned:
        stored = case.stored(pins[case.key])
        assert stored.dtype == pins[f"{case.key}.stored"].dtype, case.key
        assert np.array_equal(stored, pins[f"{case.key}.stored"]), (
            f"{case.key}: stored values differ from those pinned for this version; a change "
            f"to what the node stores raises enhance.PIXEL_REVISION (then {REPIN})"
        )


def test_the_pins_see_a_change_of_srcnn_input_range(
    monkeypatch: pytest.MonkeyPatch, pinned: list[Case], pins: dict[str, np.ndarray]
) -> None:
    """The change that made revision 2: without the clipped input, metal and outlier pixels
    change the output around them, and the pins say so (for every model)."""
    monkeypatch.setattr(srcnn_module, "INPUT_RANGE", (-1e9, 1e9))
    for case in pinned:
        if case.method.name == "srcnn":
            worst = float(np.max(np.abs(case.output() - pins[case.key])))
            assert worst > TOLERANCE, case.key
