"""The bits of a pixel outside BitsStored: what they may hold, and what they may not.

PS3.5 8.1.1 keeps a pixel's value in its BitsStored bits; the bits above them are not part of it.
A decoder (pydicom's, DCMTK's) therefore drops them. They legitimately hold the sign extended
into them (or zeros) in a signed image, or an overlay embedded in the pixel data (the retired form
of PS3.3 C.9.2.1.1, found in old CR archives). Anything else means the header does not describe
the pixels: a CT "12-bit" image with metal at a raw 6000 reads as 1904 once the bits above 12 are
dropped, so an enhanced copy would show soft tissue where the modality stored metal (and one a
viewer that keeps those bits shows as metal). Such an image is declined: its original goes on
unchanged, and the reason names the raw values.
"""

import numpy as np
from pydicom import Dataset

from dicomnode.errors import ImageDeclined

OVERLAY_GROUPS = range(0x6000, 0x601F, 2)  # PS3.5 7.6: the even groups 6000-601E


def embedded_overlay_bits(ds: Dataset) -> frozenset[int]:
    """The bit positions of the overlays embedded in `ds`'s pixel data: those with an
    OverlayBitPosition and no OverlayData of their own (C.9.2.1.1, retired)."""
    positions = set()
    for group in {tag.group for tag in ds.keys()} & set(OVERLAY_GROUPS):  # noqa: SIM118
        if (group, 0x3000) in ds or (group, 0x0102) not in ds:
            continue
        try:
            positions.add(int(ds[group, 0x0102].value))
        except (TypeError, ValueError):  # empty, or several values: no position to keep
            continue
    return frozenset(positions)


def within_stored_bits(raw: np.ndarray, bits_stored: int) -> np.ndarray:
    """`raw`'s values as their BitsStored bits alone say (sign extended in a signed dtype)."""
    unused = raw.dtype.itemsize * 8 - bits_stored
    if unused == 0:
        return raw
    shifted: np.ndarray = np.left_shift(raw, unused)
    np.right_shift(shifted, unused, out=shifted)  # arithmetic on signed: the sign comes back
    return shifted


def check_unused_bits(
    raw: np.ndarray,
    bits_stored: int,
    padding: np.ndarray,
    overlay_bits: frozenset[int],
    sop: str,
) -> None:
    """ImageDeclined when a pixel that is no padding (`padding`: as its stored bits say) holds
    bits above BitsStored other than its sign (zeros or ones, in a signed image: `raw`'s dtype
    says which) or an embedded overlay's (`overlay_bits`: their positions)."""
    bits = raw.dtype.itemsize * 8
    if bits_stored >= bits:
        return
    unsigned = raw.view(raw.dtype.str.replace("i", "u"))
    overlay_mask = sum(1 << position for position in overlay_bits if bits_stored <= position < bits)
    free = ((1 << (bits - bits_stored)) - 1) & ~(overlay_mask >> bits_stored)
    upper = (unsigned >> bits_stored) & free
    fine = upper == 0
    if raw.dtype.kind == "i":
        negative = (unsigned >> (bits_stored - 1)) & 1 == 1
        fine |= negative & (upper == free)
    stray = ~fine & ~padding
    count = int(np.count_nonzero(stray))
    if count:
        values = raw[stray]
        raise ImageDeclined(
            f"sop={sop}: {count} pixels hold bits above BitsStored={bits_stored} other than "
            f"a sign or an embedded overlay (raw values {values.min()}..{values.max()}); read "
            "by their stored bits alone, as PS3.5 8.1.1 says, they change: the header does not "
            "describe the pixels"
        )
