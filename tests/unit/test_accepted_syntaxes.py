"""The receiver takes a transfer syntax only when what comes in it can reach any PACS, or when
the site names it (node.extra_transfer_syntaxes)."""

import pytest
from pydicom.uid import (
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    MPEG4HP41,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from dicomnode.config import NodeSettings
from dicomnode.errors import ConfigError
from dicomnode.receive.scp import _why_refused
from dicomnode.receive.syntaxes import ACCEPTED_TRANSFER_SYNTAXES, accepted_syntaxes

JPEG_XL = "1.2.840.10008.1.2.4.110"
JPEG_2000_PART_2 = "1.2.840.10008.1.2.4.92"
JPIP_REFERENCED = "1.2.840.10008.1.2.4.94"
DEFLATED_IMAGE_FRAME = "1.2.840.10008.1.2.8.1"


def test_what_modalities_send_is_taken_and_what_no_decoder_here_reads_is_not() -> None:
    taken = set(ACCEPTED_TRANSFER_SYNTAXES)
    for syntax in (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        JPEGBaseline8Bit,
        JPEGLSLossless,
        JPEG2000,
        HTJ2K,
        RLELossless,
        MPEG4HP41,
        HEVCMP51,
    ):
        assert syntax in taken, syntax.name
    for syntax in (JPEG_XL, JPEG_2000_PART_2, JPIP_REFERENCED, DEFLATED_IMAGE_FRAME):
        assert syntax not in taken, syntax


def test_a_site_adds_a_syntax_its_pacs_takes_and_a_non_syntax_is_refused_by_name() -> None:
    assert accepted_syntaxes([JPEG_XL])[-1] == JPEG_XL
    assert accepted_syntaxes([JPEG_XL, RLELossless]).count(RLELossless) == 1
    assert accepted_syntaxes() == ACCEPTED_TRANSFER_SYNTAXES
    NodeSettings(extra_transfer_syntaxes=[JPEG_XL]).validate()
    ct_image_storage = "1.2.840.10008.5.1.4.1.1.2"  # a SOP class, not a syntax
    with pytest.raises(ConfigError, match=r"setting node\.extra_transfer_syntaxes: '1\.2\.840"):
        NodeSettings(extra_transfer_syntaxes=[ct_image_storage]).validate()


@pytest.mark.parametrize(
    ("sop_class", "served"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),  # CT Image Storage
        ("1.2.840.10008.1.1", True),  # Verification
        ("1.2.840.10008.1.20.1", True),  # Storage Commitment Push Model
        ("1.2.840.10008.5.1.4.1.2.2.1", False),  # Study Root Query/Retrieve - FIND
    ],
)
def test_a_refused_class_is_told_as_a_syntax_problem_only_when_the_node_serves_it(
    sop_class: str, served: bool
) -> None:
    """A Verification context refused for its syntax is not "not a storage SOP class: the node
    takes ... C-ECHO" (a line that contradicted itself)."""
    why = _why_refused(sop_class)
    assert why.startswith("no transfer syntax proposed") is served
    assert ("no query/retrieve" in why) is not served
