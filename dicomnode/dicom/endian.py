"""Explicit VR Big Endian data sets as little endian ones, for a peer that does not take the
retired syntax (PS3.5 A.3).

pydicom parses the numbers of every other VR into values, which it writes in whatever byte order
is asked for; the "other" VRs (OW, OF, OL, OD, OV: pixel data, overlays, LUTs) keep their bytes,
and pydicom will not swap them. Here their words are swapped, each at its own width (pixel data
at its BitsAllocated where that is wider than OW's 16 bits), and the data set then claims to
have been read little endian, so pynetdicom writes it in the presentation context's syntax. UN
values stay as they are: their structure is unknown (a private element the sender could not
name).
"""

import logging

import numpy as np
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.uid import ExplicitVRLittleEndian

log = logging.getLogger(__name__)

_WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_PIXEL_DATA = 0x7FE00010


def little_endian(dataset: Dataset) -> Dataset:
    """`dataset` (read big endian) converted in place to Explicit VR Little Endian."""
    _swap_words(dataset, dataset)
    dataset.set_original_encoding(False, True, dataset.original_character_set)
    if hasattr(dataset, "file_meta"):  # pynetdicom picks the presentation context by it
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _swap_words(dataset: Dataset, root: Dataset) -> None:
    """Every "other" value of `dataset` and of its sequences' items (iterating parses each raw
    element); pixel data (an icon's too) a word per sample where samples are wider than OW's."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                _swap_words(item, root)
            continue
        width = _WORD_BYTES.get(element.VR, 0)
        if element.tag == _PIXEL_DATA and element.VR == "OW":
            width = max(width, int(dataset.get("BitsAllocated", 16) or 16) // 8)
        _swap(element, width, root)


def _swap(element: DataElement, width: int, root: Dataset) -> None:
    value = element.value
    if width < 2 or not isinstance(value, bytes) or not value:
        return
    if len(value) % width:
        log.warning(
            "big endian %s of %d bytes, not whole %d-byte words, sent as it is sop=%s",
            element.tag,
            len(value),
            width,
            root.get("SOPInstanceUID", "(no SOPInstanceUID)"),
        )
        return
    words = np.frombuffer(value, dtype=f">u{width}")
    element.value = words.astype(f"<u{width}").tobytes()
