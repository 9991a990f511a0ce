"""UIDs become path components, so anything but digits and dots is refused before use."""

import pytest

from dicomnode.errors import SpoolError
from dicomnode.receive.status import status_dataset
from dicomnode.spool import validate_uid


@pytest.mark.parametrize("value", ["1.2.840.10008.1.2", "1.2.03.4", "2.25.1234567890"])
def test_valid_uids_pass_unchanged(value: str) -> None:
    assert validate_uid(value, "SOPInstanceUID") == value


def test_trailing_null_padding_is_removed() -> None:
    assert validate_uid("1.2.3\x00", "SOPInstanceUID") == "1.2.3"


@pytest.mark.parametrize(
    "value",
    ["", None, "../../etc/passwd", "1.2/3", "1..2", ".1.2", "1.2.", "1.2.a", "1" * 65, "1.2 3"],
)
def test_invalid_uids_are_refused_naming_the_attribute(value: object) -> None:
    with pytest.raises(SpoolError, match="StudyInstanceUID"):
        validate_uid(value, "StudyInstanceUID")


def test_a_refused_uid_is_shown_with_its_letters_and_digits_masked() -> None:
    """A sender may have put a patient's name or ID where a UID belongs: the log and the
    status's comment show its shape, never the name or the number."""
    with pytest.raises(SpoolError) as refused:
        validate_uid("DOE^JANE.1.2", "StudyInstanceUID")
    message = str(refused.value)
    assert "DOE" not in message and "JANE" not in message
    assert "is not a valid UID: 'xxx^xxxx.9.9' (x: a letter, 9: a digit)" in message
    with pytest.raises(SpoolError) as refused:
        validate_uid("PHI-12345", "SeriesInstanceUID")
    assert "12345" not in str(refused.value) and "'xxx-99999'" in str(refused.value)
    with pytest.raises(SpoolError, match=r"SOPInstanceUID is not a valid UID: '9\.9/9' \(x: a"):
        validate_uid("1.2/3", "SOPInstanceUID")  # what is wrong still shows


def test_the_sender_reads_the_verdict_and_the_shape_within_64_characters() -> None:
    """The status comment keeps 64 characters: the verdict goes first, then the shape."""
    with pytest.raises(SpoolError) as refused:
        validate_uid("1.2..3", "SeriesInstanceUID")
    comment = status_dataset(0xC000, str(refused.value)).ErrorComment
    assert comment == "SeriesInstanceUID is not a valid UID: '9.9..9' (x: a letter, 9: "
