"""The lossy compression history a derived image inherits (PS3.3 C.7.6.1.1.5): once lossy
compressed, an image stays marked lossy, also when its source said so only by the syntax it came
in, or, in a JPEG 2000 syntax that may be either, by the wavelet its code stream declares."""

from pydicom import Dataset
from pydicom.encaps import generate_fragmented_frames

# Transfer syntaxes that are always lossy, and the LossyImageCompressionMethod each implies
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Near-Lossless
}
# JPEG 2000 syntaxes that may be lossy or lossless (PS3.5 A.4.4, A.4.10)
_JPEG2000_EITHER = {
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # High-Throughput JPEG 2000
}
_REVERSIBLE_5_3 = 1  # the COD segment's wavelet transformation (ISO 15444-1 Table A.20)


def lossy_history(ds: Dataset, source: Dataset) -> None:
    """Mark `ds` (derived from `source`) lossy where its source was."""
    syntax = str(getattr(source.get("file_meta"), "TransferSyntaxUID", ""))
    if str(source.get("LossyImageCompression", "00")) == "01":
        ds.LossyImageCompression = "01"
    elif syntax in _LOSSY_SYNTAXES:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = _LOSSY_SYNTAXES[syntax]
    elif syntax in _JPEG2000_EITHER and not _reversible_wavelet(source):
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = _JPEG2000_EITHER[syntax]


def _reversible_wavelet(source: Dataset) -> bool:
    """Whether the first frame's code stream declares the 5-3 reversible wavelet (the COD
    segment's last byte, ISO 15444-1 A.6.1). Any other (9-7 irreversible; in Part 2 a kernel
    of its own) counts as lossy. A reversible stream may still have been cut short, which its
    header does not tell; one that cannot be read counts as reversible (its decoder said so)."""
    try:
        first = next(generate_fragmented_frames(source.PixelData))[0]
    except Exception:  # not encapsulated, or broken
        return True
    end = first.find(b"\xff\x90")  # the main header ends at the first tile (SOT)
    header = first[:end] if end >= 0 else first
    cod = header.find(b"\xff\x52")
    if cod < 0 or len(header) <= cod + 13:
        return True
    return header[cod + 13] == _REVERSIBLE_5_3
