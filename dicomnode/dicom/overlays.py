"""Overlays a derived image can keep at its source's grid (PS3.3 C.9.2).

An overlay embedded in the pixel data's unused high bits (the retired form of C.9.2.1.1, found in
old CR archives: a laterality marker) would be lost, since the derived pixels keep only the
stored bits, while its header stayed to describe a marker that is gone. It moves into
OverlayData of its own instead, one bit per pixel of the frame it lies in.
"""

import numpy as np
from pydicom import Dataset
from pydicom.pixels import pack_bits

from dicomnode.imaging.unused_bits import OVERLAY_GROUPS


def separate_embedded_overlays(ds: Dataset, source: Dataset) -> None:
    """Each embedded overlay of `ds` (a copy of `source`) given OverlayData from the source's
    pixels, or removed where those cannot be read (compressed, multi-frame, a bit position
    inside the stored bits). Overlays with OverlayData of their own are left as they are."""
    groups = {tag.group for tag in ds.keys()} & set(OVERLAY_GROUPS)  # noqa: SIM118
    for group in sorted(groups):
        if (group, 0x3000) in ds:
            continue
        position = ds.get((group, 0x0102))
        bits = None if position is None else _embedded_bits(source, int(position.value))
        if bits is None:  # no data, and none to be had: a header without an overlay
            for tag in [tag for tag in ds.keys() if tag.group == group]:  # noqa: SIM118
                del ds[tag]
            continue
        # The bits are those of the whole frame, wherever the header said they lay.
        ds.add_new((group, 0x0010), "US", int(source.Rows))  # OverlayRows
        ds.add_new((group, 0x0011), "US", int(source.Columns))  # OverlayColumns
        ds.add_new((group, 0x0050), "SS", [1, 1])  # OverlayOrigin
        ds.add_new((group, 0x0100), "US", 1)  # OverlayBitsAllocated
        ds.add_new((group, 0x0102), "US", 0)  # OverlayBitPosition
        ds.add_new((group, 0x3000), "OW", pack_bits(bits))  # OverlayData


def _embedded_bits(source: Dataset, position: int) -> np.ndarray | None:
    """Bit `position` of each pixel of a single-frame source (native, little endian), or None
    where there is no such overlay to read."""
    syntax = getattr(source.get("file_meta"), "TransferSyntaxUID", None)
    allocated = int(source.get("BitsAllocated", 0) or 0)
    stored = int(source.get("BitsStored", allocated) or allocated)
    if (
        syntax is None
        or syntax.is_compressed
        or not syntax.is_little_endian
        or not stored <= position < allocated  # within the image's bits: no overlay there
        or int(source.get("NumberOfFrames", 1) or 1) > 1
        or allocated not in (8, 16)
    ):
        return None
    pixels = int(source.Rows) * int(source.Columns)
    raw = np.frombuffer(source.PixelData, dtype=f"<u{allocated // 8}", count=pixels)
    return ((raw >> position) & 1).astype(np.uint8)
