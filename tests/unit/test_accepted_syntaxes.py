"""The receiver takes a transfer syntax only when what comes in it can reach any PACS."""

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    MPEG4HP41,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MPEGTransferSyntaxes,
    RLELossless,
)

from dicomnode.receive.syntaxes import ACCEPTED_TRANSFER_SYNTAXES, UNCOMPRESSED

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


def test_every_compressed_syntax_taken_but_video_can_be_decoded_for_an_uncompressed_pacs() -> None:
    """A new pydicom that decodes JPEG XL makes this list longer, never wrong."""
    for syntax in ACCEPTED_TRANSFER_SYNTAXES:
        if syntax in UNCOMPRESSED or syntax in MPEGTransferSyntaxes:
            continue
        assert get_decoder(UID(syntax)).is_available, UID(syntax).name
