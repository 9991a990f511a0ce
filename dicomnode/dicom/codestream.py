"""The image size a compressed frame's own code stream declares, read before it is decoded.

A decoder allocates what the code stream says, not what the DICOM header says: a 3 KB JPEG 2000
stream of 30000 x 30000 pixels inside a data set that says 64 x 64 was counted as 49 KB against
`enhance.max_series_mb` and took 5.4 GB to decode. Read here from the stream's first bytes
(JPEG 2000's SIZ marker segment, ISO/IEC 15444-1 A.5.1; the SOF segment of JPEG, ITU-T T.81
B.2.2, and JPEG-LS, ISO/IEC 14495-1 C.2.2), the size can be checked first.
"""

import struct

from pydicom import Dataset
from pydicom.encaps import generate_frames

from dicomnode.errors import PixelsUndecodable

_J2K_SOC, _J2K_SIZ = b"\xff\x4f", b"\xff\x51"
_JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers: SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC); JPEG-LS's SOF55.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn: markers without a length
_SOS, _EOI = 0xDA, 0xD9


def declared_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) as the frame's code stream declares them; None when it is not a JPEG,
    JPEG-LS or JPEG 2000 code stream or does not say (RLE, a truncated stream)."""
    if frame.startswith(_J2K_SOC + _J2K_SIZ) and len(frame) >= 24:
        # SIZ: Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz (the image area is Xsiz - XOsiz wide)
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", frame[8:24])
        return ysiz - yosiz, xsiz - xosiz
    if not frame.startswith(_JPEG_SOI):
        return None
    at = 2
    while at + 4 <= len(frame):
        if frame[at] != 0xFF:
            return None
        marker = frame[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (_SOS, _EOI):
            return None
        length = int.from_bytes(frame[at + 2 : at + 4], "big")
        if marker in _SOF and at + 9 <= len(frame):
            rows, columns = struct.unpack(">HH", frame[at + 5 : at + 9])
            return rows, columns
        at += 2 + length
    return None


def check_code_streams(ds: Dataset) -> None:
    """PixelsUndecodable (an ImageDeclined), before anything is decoded, when a compressed
    frame's code stream declares another size than Rows x Columns: the decoder would allocate
    what it declares."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_encapsulated or "PixelData" not in ds:
        return
    frames = _int(ds, "NumberOfFrames") or 1
    expected = (_int(ds, "Rows") or 0, _int(ds, "Columns") or 0)
    streams = generate_frames(ds.PixelData, number_of_frames=frames)  # one frame at a time
    for number in range(1, frames + 1):
        try:
            frame = next(streams)
        except Exception:  # no more, or not parsable as items: the decoder says why, below
            return
        size = declared_size(bytes(frame[:65536]))
        if size is not None and size != expected:
            sop = ds.get("SOPInstanceUID", "(no SOPInstanceUID)")
            raise PixelsUndecodable(
                f"sop={sop}: frame {number}'s code stream is {size[0]} x {size[1]} pixels where "
                f"Rows x Columns say {expected[0]} x {expected[1]}: not decoded"
            )


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(ds.get(keyword) or 0) or None
    except (TypeError, ValueError):
        return None
