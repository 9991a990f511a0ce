"""Reading a dataset without letting its size run away: the `node.max_instance_mb` cap.

A Deflated Explicit VR Little Endian dataset (PS3.5 A.5, 1.2.840.10008.1.2.1.99) is a raw
deflate stream: a few hundred KB can inflate to gigabytes, and pydicom inflates the whole stream
in one call before it reads a single element. So everything that reads a deflated dataset, the
receiver and every later reader of the spool, first counts its inflated size in small steps and
refuses past the cap, and the receiver reads the header from a bounded inflated prefix.
"""

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.filereader import read_file_meta_info

from dicomnode.errors import DecodeError, InstanceTooLarge

DEFLATED = "1.2.840.10008.1.2.1.99"  # PS3.5 A.5
_STEP = 1 << 16  # bytes inflated per step: memory stays at this, whatever the ratio
_PREAMBLE = 128 + 4  # PS3.10 7.1: preamble and "DICM"
_GROUP_LENGTH_ELEMENT = 12  # (0002,0000) UL in explicit VR: tag 4, VR 2, length 2, value 4


def _raw_inflater() -> Any:
    return zlib.decompressobj(-zlib.MAX_WBITS)  # PS3.5 A.5: deflate without zlib header


def inflated_size(chunks: Iterable[bytes | memoryview], limit: int, what: str) -> int:
    """The inflated size of a raw deflate stream; InstanceTooLarge past `limit` (0: none)."""
    inflater = _raw_inflater()
    total = 0
    try:
        for chunk in chunks:
            pending: bytes | memoryview = chunk
            while pending and not inflater.eof:
                total += len(inflater.decompress(pending, _STEP))
                if limit and total > limit:
                    raise InstanceTooLarge(
                        f"{what} inflates to more than node.max_instance_mb={limit // 1048576} MB"
                    )
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise DecodeError(f"{what}: deflated data set is corrupt ({exc})") from None
    if not inflater.eof:
        raise DecodeError(f"{what}: deflated data set is truncated (its stream never ends)")
    return total


def inflate_prefix(data: bytes | memoryview, size: int) -> bytes:
    """At most `size` inflated bytes from the start of a raw deflate stream (for the header)."""
    try:
        return _raw_inflater().decompress(data, size)
    except zlib.error as exc:
        raise DecodeError(f"deflated data set is corrupt ({exc})") from None


def _file_chunks(path: Path, offset: int) -> Iterator[bytes]:
    with path.open("rb") as stream:
        stream.seek(offset)
        while chunk := stream.read(_STEP):
            yield chunk


def check_file(path: Path, limit: int) -> None:
    """Raise InstanceTooLarge if the file holds (or inflates to) more than `limit` bytes."""
    if not limit:
        return
    if path.stat().st_size > limit:
        raise InstanceTooLarge(
            f"{path.name} is larger than node.max_instance_mb={limit // 1048576} MB"
        )
    meta = read_file_meta_info(path)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return
    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise DecodeError(f"{path.name}: deflated file without a file meta group length")
    offset = _PREAMBLE + _GROUP_LENGTH_ELEMENT + int(group_length)
    inflated_size(_file_chunks(path, offset), limit, path.name)


def read_bounded(path: Path, limit: int, **options: Any) -> Dataset:
    """`dcmread(path, **options)` once `check_file` allows it."""
    check_file(path, limit)
    return dcmread(path, **options)
