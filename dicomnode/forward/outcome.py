"""The one place that decides what a peer's answer means for a retry (PS3.7 C, PS3.4 B.2.3)."""

import enum

from dicomnode.errors import BrokenOff, ForwardError


class Outcome(enum.Enum):
    SUCCESS = "success"
    WARNING = "warning"  # stored, with a remark (e.g. 0xB000 coercion): counts as delivered
    TRANSIENT = "transient"  # try again later
    PERMANENT = "permanent"  # resending the same data will fail the same way


SOP_CLASS_NOT_SUPPORTED = 0x0122  # a C-STORE refused for its SOP class (PS3.4 B.2.3)


def is_warning(status: int) -> bool:
    """A DIMSE warning status (PS3.7 C): the request was carried out, with a remark."""
    return status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def classify_store_status(status: int) -> Outcome:
    if status == 0x0000:
        return Outcome.SUCCESS
    if is_warning(status):
        return Outcome.WARNING
    # Duplicate SOP Instance: a PACS set to refuse copies has this one already (a retry sends
    # again what an earlier attempt delivered): delivered, with a remark.
    if status == 0x0111:
        return Outcome.WARNING
    # Out of resources (0xA7xx), processing failure (0x0110), resource limitation (0x0213):
    # the peer's state, not our data, is at fault.
    if 0xA700 <= status <= 0xA7FF or status in (0x0110, 0x0213):
        return Outcome.TRANSIENT
    # 0x0122 SOP class not supported, 0x0124 not authorised, 0xA9xx dataset does not match
    # the SOP class, 0xCxxx cannot understand, and anything unknown.
    return Outcome.PERMANENT


# What a C-STORE status means (PS3.4 B.2.3, PS3.7 C), for the operator who reads the error.
_STATUS_NAMES = {
    0x0001: "attribute list error",
    0x0107: "attribute list error",
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance: already there",
    0x0116: "attribute value out of range",
    0x0117: "invalid SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0x0211: "unrecognised operation",
    0x0213: "resource limitation",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
_STATUS_RANGES = (
    (0xA700, 0xA7FF, "out of resources"),
    (0xA900, 0xA9FF, "data set does not match SOP class"),
    (0xC000, 0xCFFF, "cannot understand"),
)


def status_text(status: int) -> str:
    """`0xA700 (out of resources)`: the code as the PACS's log shows it, and what it means."""
    name = _STATUS_NAMES.get(status) or next(
        (name for low, high, name in _STATUS_RANGES if low <= status <= high), None
    )
    return f"0x{status:04X} ({name})" if name else f"0x{status:04X}"


def no_response(
    sop: str, timeout: float | None, *, timed_out: bool, refused: str | None = None
) -> ForwardError:
    """The error for a C-STORE that got no answer: what the peer sent broke a limit
    (`refused`, the association aborted: the series stops, as for a peer that hangs), our
    `network.dimse_timeout` ran out (the peer hangs: the series stops), or the peer ended the
    association first (BrokenOff: the series' other instances may go on a new one)."""
    if refused is not None:
        return ForwardError(
            f"no C-STORE response for sop={sop}: the peer's answer broke a limit, association "
            f"aborted ({refused})",
            transient=True,
        )
    if timed_out:
        return ForwardError(
            f"no C-STORE response for sop={sop} within {timeout:g} s (network.dimse_timeout)",
            transient=True,
        )
    return BrokenOff(
        f"no C-STORE response for sop={sop}: the peer ended the association first "
        "(an A-ABORT or a closed connection)"
    )
