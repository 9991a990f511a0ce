"""The one place that maps a receive failure to a C-STORE status (PS3.4 Annex B.2.3)."""

import re

from pydicom import Dataset

from dicomnode.db.failures import database_said
from dicomnode.errors import (
    DataSetMismatch,
    DecodeError,
    DiskFull,
    InstanceTooLarge,
    SopClassNotSupported,
    SpoolError,
    StoreTimedOut,
    UidCollision,
)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the sender should try again later
CANNOT_UNDERSTAND = 0xC000  # the dataset is unusable; resending it won't help
DATA_SET_MISMATCH = 0xA900  # the data set is not the instance (or SOP class) the request names
SOP_CLASS_NOT_SUPPORTED = 0x0122

# A local path (spool, data_dir) tells a caller how the host is laid out: the log keeps it.
_LOCAL_PATH = re.compile(r"(?<![\w.])/[^\s'\",;:]*")


def status_for(error: Exception) -> int:
    """A dataset we cannot use is refused for good; every other failure (spool or disk full,
    database unavailable, a bug of ours) is not the sender's fault, so it is asked to resend."""
    if isinstance(error, DataSetMismatch):
        return DATA_SET_MISMATCH
    if isinstance(error, SopClassNotSupported):
        return SOP_CLASS_NOT_SUPPORTED
    if isinstance(error, DecodeError | UidCollision):
        return CANNOT_UNDERSTAND
    return OUT_OF_RESOURCES


def refusal_reason(error: Exception) -> str:
    """The `reason` label of a refused instance in the metrics (a short, fixed vocabulary)."""
    if isinstance(error, DataSetMismatch):
        return "data_set_mismatch"
    if isinstance(error, SopClassNotSupported):
        return "sop_class_not_supported"
    if isinstance(error, UidCollision):
        return "uid_collision"
    if isinstance(error, DecodeError):
        return "cannot_decode"
    if isinstance(error, InstanceTooLarge):
        return "too_large"
    if isinstance(error, DiskFull):
        return "disk_full"
    if isinstance(error, StoreTimedOut):
        return "timed_out"
    if isinstance(error, SpoolError):
        return "spool"
    if database_said(error) is not None:
        return "database"
    return "internal"


def refusal_text(error: Exception) -> str:
    """What the log line says of `error`: a database failure in the database's own words."""
    said = database_said(error)
    return str(error) if said is None else f"the database could not record it: {said}"


def sender_text(error: Exception) -> str:
    """What the sender's ErrorComment says: a database failure without its words (they may name
    the database server's address, which is no caller's business)."""
    if database_said(error) is not None:
        return "the database could not record it; send it again later"
    return refusal_text(error)


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A C-STORE status with an ErrorComment for the sender's log: LO (PS3.5 6.2), so at most
    64 characters of the default repertoire, without backslash or control characters, and
    without the local paths our own log lines carry."""
    result = Dataset()
    result.Status = status
    text = _LOCAL_PATH.sub("(path)", comment.replace("\\", "/"))
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    if text:
        result.ErrorComment = text[:64]
    return result
