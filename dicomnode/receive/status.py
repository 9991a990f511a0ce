"""The one place that maps a receive failure to a C-STORE status (PS3.4 Annex B.2.3)."""

from pydicom import Dataset

from dicomnode.errors import DecodeError, SpoolError

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the sender should try again later
CANNOT_UNDERSTAND = 0xC000  # the dataset is unusable; resending it won't help


def status_for(error: Exception) -> int:
    if isinstance(error, DecodeError):
        return CANNOT_UNDERSTAND
    if isinstance(error, SpoolError | OSError):
        return OUT_OF_RESOURCES
    # Anything else (the database unavailable, a bug) is ours, not the sender's: ask to resend.
    return OUT_OF_RESOURCES


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A C-STORE status with an ErrorComment (LO, at most 64 characters) for the sender's log."""
    result = Dataset()
    result.Status = status
    if comment:
        result.ErrorComment = comment.replace("\\", "/")[:64]
    return result
