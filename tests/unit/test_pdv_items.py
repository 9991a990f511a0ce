"""A P-DATA-TF's body is PDV items that fill it exactly (PS3.8 9.3.5), told before pynetdicom
reads it (`dicom/bounded_socket.py`) and the store lane parses it (`dicom/wire.py`)."""

import struct

import pytest

from dicomnode.dicom.wire import fragments, pdv_problem


def _item(fragment: bytes, control: int = 0x00) -> bytes:
    return struct.pack(">LBB", len(fragment) + 2, 1, control) + fragment


def test_items_that_fill_the_body_are_well_formed() -> None:
    assert pdv_problem(bytearray(_item(b"ab"))) is None
    assert pdv_problem(bytearray(_item(b"") + _item(b"command", 0x03))) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            struct.pack(">LBB", 1000, 1, 0) + bytes(46),
            "item at byte 0 declares 1000 bytes, 48 follow",
        ),
        (_item(b"ab") + b"\0\0", "item at byte 8 is cut short (2 bytes)"),
        (struct.pack(">LBB", 1, 1, 0), "item at byte 0 declares 1 bytes, 2 follow"),
        (b"", "holds no PDV item"),
    ],
    ids=["overrun", "trailing bytes", "shorter than its headers", "empty"],
)
def test_items_that_do_not_fill_the_body_exactly_are_named(body: bytes, problem: str) -> None:
    assert problem in (pdv_problem(bytearray(body)) or "")
    assert fragments(bytearray(body)) is None
