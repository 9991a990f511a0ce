"""The transfer syntaxes the receiver takes: those whose instances it can always deliver.

An instance goes to a PACS as it came when the PACS takes its syntax, and decoded (Explicit or
Implicit VR Little Endian) when it does not. So the node takes the uncompressed syntaxes, the
compressed ones pydicom can decode here (JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE, through pylibjpeg),
and video (MPEG-2, MPEG-4, HEVC: a video has no other syntax to come in, and goes as it came). It
refuses the rest (JPEG XL, JPEG 2000 Part 2, JPIP, whose pixels are elsewhere, SMPTE ST 2110,
Deflated Image Frame): a modality that proposes one proposes a syntax we take beside it, and an
instance taken in one could reach no PACS that does not take it too (DCMTK's `storescp +xa` and
Orthanc refuse most of them as well). A site whose PACS takes one names it in
`node.extra_transfer_syntaxes`.
"""

from collections.abc import Sequence

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MPEGTransferSyntaxes,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES

UNCOMPRESSED = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    }
)


def deliverable(syntax: str) -> bool:
    """Whether an instance in `syntax` can reach any PACS: as it came, or decoded here."""
    if syntax in UNCOMPRESSED or syntax in MPEGTransferSyntaxes:
        return True
    try:
        return bool(get_decoder(UID(syntax)).is_available)
    except NotImplementedError:  # pydicom has no decoder for it at all
        return False


ACCEPTED_TRANSFER_SYNTAXES = [syntax for syntax in ALL_TRANSFER_SYNTAXES if deliverable(syntax)]


def accepted_syntaxes(extra: Sequence[str] = ()) -> list[str]:
    """What the receiver takes: the deliverable syntaxes, then the site's
    `node.extra_transfer_syntaxes` (its PACS takes them: an instance in one goes only to a
    destination that takes it too, and is dead for the others, named as ours)."""
    return [*ACCEPTED_TRANSFER_SYNTAXES, *(s for s in extra if s not in ACCEPTED_TRANSFER_SYNTAXES)]
