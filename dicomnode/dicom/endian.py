"""Explicit VR Big Endian data sets as little endian ones, for a peer that does not take the
retired syntax (PS3.5 A.3).

pydicom parses the numbers of every other VR into values, which it writes in whatever byte order
is asked for; the "other" VRs (OW, OF, OL, OD, OV: pixel data, overlays, LUTs, curves) keep their
bytes, and pydicom will not swap them. Here their words are swapped, each at its own width, and
the data set then claims to have been read little endian, so pynetdicom writes it in the
presentation context's syntax. UN values stay as they are: their structure is unknown (a private
element the sender could not name).
"""

import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

_WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def little_endian(dataset: Dataset) -> Dataset:
    """`dataset` (read big endian) converted in place to Explicit VR Little Endian."""
    for element in dataset.iterall():  # iterating parses every raw element, nested ones too
        width = _WORD_BYTES.get(element.VR)
        value = element.value
        if width and isinstance(value, bytes) and value and len(value) % width == 0:
            words = np.frombuffer(value, dtype=f">u{width}")
            element.value = words.astype(f"<u{width}").tobytes()
    dataset.set_original_encoding(False, True, dataset.original_character_set)
    if hasattr(dataset, "file_meta"):  # pynetdicom picks the presentation context by it
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset
