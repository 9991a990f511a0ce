"""The log every command writes: one line per event on stderr, UTC times, libraries kept quiet.

Our loggers (`dicomnode.*`) log at `logging.level`; every other library (pynetdicom, highdicom,
APScheduler, TensorFlow, absl, SQLAlchemy, ...) at `logging.third_party_level` (WARNING by
default): their INFO lines narrate PDUs and attribute copies, ours say what happened to a job.
"""

import logging
import os
import ssl
import sys
import warnings
from datetime import UTC, datetime

from dicomnode.cli.safe_text import install_log_filter

# Libraries that set a level of their own on import (or may): set again after configuring.
THIRD_PARTY_LOGGERS = (
    "pynetdicom",
    "highdicom",
    "apscheduler",
    "tensorflow",
    "absl",
    "sqlalchemy",
    "pylibjpeg",
    "h5py",
    "PIL",
    "matplotlib",
)
# pynetdicom's lines for a failure our forward layer reports itself, naming the destination
# (`delivery failed job=… destination=…`, or the command's one error line).
_REPORTED_BY_US = (
    "Association request failed: unable to connect to remote",
    "TCP Initialisation Error",
    "DIMSE timeout reached while waiting for message response",
    "Connection closed while waiting for DIMSE message",
)
# Its association negotiation's (ERROR, three lines for one rejection): our forward layer and
# `dicomnode echo` tell a rejection, an abort, a timeout or no accepted context in one line.
_NEGOTIATION_REPORTED_BY_US = (
    "Association Rejected",
    "Result: Rejected",
    "Reason: ",
    "Association Aborted",
    "No accepted presentation contexts",
    "ACSE timeout reached while waiting for response",
)


class UtcFormatter(logging.Formatter):
    """`2026-11-29T23:01:12.345Z INFO dicomnode.node node started ...`: ISO 8601 in UTC, like the
    times of `dicomnode jobs` (a log read beside the job table, or from another time zone,
    needs no guessing)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _not_said_twice(record: logging.LogRecord) -> bool:
    """Drop pynetdicom's records that repeat a failure we report ourselves (on the handler: a
    logger's filter would not see its children's records)."""
    if not record.name.startswith("pynetdicom"):
        return True
    message = record.getMessage()
    if message.startswith(_REPORTED_BY_US):
        return False
    if record.name == "pynetdicom.acse" and message.startswith(_NEGOTIATION_REPORTED_BY_US):
        return False
    # pynetdicom logs a failed client handshake twice, once with a traceback; the reason is in
    # its other line and in our delivery error, which names the destination.
    return not (record.exc_info and isinstance(record.exc_info[1], ssl.SSLError))


def _quiet_tensorflow_core(third_party_level: int) -> None:
    """TensorFlow's C++ core logs on its own (CPU features, CUDA factories) unless told before it
    is imported; TF_CPP_MIN_LOG_LEVEL set by the user wins (it is theirs, not a setting of ours).
    """
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if third_party_level <= logging.INFO else "3"


def configure_logging(level: str, third_party_level: str = "WARNING") -> None:
    """One line per event on stderr: UTC time, level, logger, message (fields as key=value).

    Every record, ours and the libraries', has its control characters escaped (a newline in a
    UID cannot forge a line), and Python warnings (pydicom's) become log records too.
    """
    ours, theirs = logging.getLevelName(level), logging.getLevelName(third_party_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(_not_said_twice)
    logging.basicConfig(level=theirs, handlers=[handler], force=True)
    logging.getLogger("dicomnode").setLevel(ours)
    install_log_filter()
    logging.captureWarnings(True)
    _quiet_tensorflow_core(theirs)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(theirs)
    # pydicom logs a decoder failure with a traceback but without saying which instance; ours
    # says it (ImageDeclined names the SOP Instance UID and lands in the job's details).
    # pydicom sets its logger's level when first imported, so import it before overriding.
    import pydicom.config  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    # A caller's bogus UIDs: pynetdicom logs each it decodes (the refused contexts are told by
    # us), and pydicom warns once per distinct value, which Python's warning registry keeps for
    # good (25 MB for one hostile request). Our own checks name what matters (spool.validate_uid).
    for name in ("pynetdicom.presentation", "pynetdicom.utils"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Invalid value for VR", category=UserWarning)
