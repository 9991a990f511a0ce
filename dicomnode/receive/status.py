"""The one place that maps a receive failure to a C-STORE status (PS3.4 Annex B.2.3)."""

from pydicom import Dataset

from dicomnode.errors import DecodeError

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the sender should try again later
CANNOT_UNDERSTAND = 0xC000  # the dataset is unusable; resending it won't help


def status_for(error: Exception) -> int:
    """A dataset we cannot use is refused for good; every other failure (spool or disk full,
    database unavailable, a bug of ours) is not the sender's fault, so it is asked to resend."""
    return CANNOT_UNDERSTAND if isinstance(error, DecodeError) else OUT_OF_RESOURCES


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A C-STORE status with an ErrorComment (LO, at most 64 characters) for the sender's log."""
    result = Dataset()
    result.Status = status
    if comment:
        result.ErrorComment = comment.replace("\\", "/")[:64]
    return result
