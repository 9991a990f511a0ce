"""The presentation contexts a series is offered in: its own syntaxes, and Explicit then
Implicit VR Little Endian for a peer that takes neither (Implicit is the one every SCP must)."""

from pathlib import Path

import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom.sop_class import CTImageStorage

from dicomnode.db import SpooledInstance
from dicomnode.forward.scu import contexts_for

FALLBACK = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.mark.parametrize(
    ("stored", "offered"),
    [
        ([ImplicitVRLittleEndian], [[ImplicitVRLittleEndian]]),
        ([ExplicitVRLittleEndian], [[ExplicitVRLittleEndian], FALLBACK]),
        ([ExplicitVRBigEndian], [[ExplicitVRBigEndian], FALLBACK]),
        ([RLELossless], [[RLELossless], FALLBACK]),
        (
            [ImplicitVRLittleEndian, RLELossless],
            [[ImplicitVRLittleEndian], [RLELossless], FALLBACK],
        ),
    ],
)
def test_a_series_is_offered_its_syntaxes_and_the_uncompressed_fallback(
    stored: list[str], offered: list[list[str]]
) -> None:
    series = [
        SpooledInstance(f"1.2.3.{n}", CTImageStorage, syntax, Path(f"{n}.dcm"))
        for n, syntax in enumerate(stored)
    ]
    contexts = contexts_for(series)
    assert {str(cx.abstract_syntax) for cx in contexts} == {CTImageStorage}
    assert [cx.transfer_syntax for cx in contexts] == offered
