"""Code strings as the database can keep them (PostgreSQL refuses text with NUL)."""

import pytest

from dicomnode.db.records import printable_code


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("CT", "CT"),
        ("CT\x00", "CT"),  # padded with NUL
        ("C\x00T", "CT"),  # NUL inside
        (" MR \x01", "MR"),
        ("C\ufffdT", "CT"),  # a byte that was not ASCII, as decoded with errors="replace"
        ("\x00\x00", ""),
    ],
)
def test_only_printable_ascii_is_kept(sent: str, kept: str) -> None:
    assert printable_code(sent) == kept
