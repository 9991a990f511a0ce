"""The exception hierarchy: every failure the node explains to an operator is one of these.

Each boundary maps these once: the C-STORE handler to a DICOM status, the job runner to a job
state, the CLI to an exit code and one readable line. Messages name the object concerned (setting,
file, SOP Instance UID, job id) and, where it helps, what to do about it.
"""

from collections.abc import Sequence


class DicomNodeError(Exception):
    """Base class of all errors raised on purpose by dicomnode."""


class ConfigError(DicomNodeError):
    """A setting is missing, malformed or out of range; the message names the key.

    `setting` is that key (`node.port`) when the error is about one, so that the loader can add
    the environment variable that set it.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DatabaseUnavailable(DicomNodeError):
    """The database is there but cannot be used now: another process held SQLite's write lock
    past the busy timeout, or the PostgreSQL server does not answer. Nothing is wrong with the
    settings; the same command later works (exit 1, not a configuration error's 2)."""


class SpoolError(DicomNodeError):
    """The spool could not store or find a file (disk full, permissions, bad UID for a path)."""


class DiskFull(SpoolError):
    """Free space in the data directory is below `node.min_free_disk_mb`: stores are refused."""


class StoreTimedOut(DicomNodeError):
    """The spool or the database did not finish storing a received instance by its deadline
    (`node.store_timeout_seconds`): the sender is answered 0xA700, the store goes on behind."""


class DecodeError(DicomNodeError):
    """A received or spooled dataset is malformed or lacks what the node needs to file it."""


class DataSetMismatch(DecodeError):
    """A received data set names another SOP class or instance than its C-STORE request does
    (PS3.4 B.2.3, status A900): filed, it could never be delivered as the instance it claims."""


class SopClassNotSupported(DecodeError):
    """A C-STORE for a SOP class that is not a storage SOP class, or that is not its
    presentation context's (status 0122)."""


class UidCollision(DicomNodeError):
    """A copy of a stored SOP Instance UID from another sender, for another series
    (`node.on_duplicate = "replace_unless_foreign"`): refused (0xC000), so that its sender
    does not take it for stored; the first copy stays."""


class InstanceTooLarge(DicomNodeError):
    """An instance is (or inflates to) more than `node.max_instance_mb`: refused, never read."""


class SeriesTooLarge(DicomNodeError):
    """A series whose pixels would take more than `enhance.max_series_mb` in a job: not
    enhanced (its originals go as always); the message says how large and which setting."""


class JobStateError(DicomNodeError):
    """An admin asked for a job transition that its current state does not allow."""


class ForwardError(DicomNodeError):
    """Sending to a destination failed.

    `transient` says whether trying again later may succeed (peer down, out of resources,
    association rejected) or not (SOP class refused, not authorised, dataset rejected);
    `stored` names the instances of the series the peer took before it failed (the delivery's
    record: a retry does not send them again); `class_refused` that what the peer refused, for
    good, was the SOP class itself (0x0122, or no presentation context for it), not the data.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        stored: Sequence[str] = (),
        class_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.stored = tuple(stored)
        self.class_refused = class_refused

    @property
    def sent(self) -> int:
        return len(self.stored)


class BrokenOff(ForwardError):
    """The peer aborted or closed the association during one instance's C-STORE (not a
    timeout of ours): if it accepts a new association, it may well take the series' others."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class ClassNotTaken(ForwardError):
    """The peer accepted no presentation context for an instance's SOP class (it does not store
    that class, e.g. SR): its refusal, for good."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False, class_refused=True)


class SeriesIncomplete(ForwardError):
    """The peer took part of a series and asked for the rest later ("try later" answers, an
    association it ended): it is up and answering, so the job's next series still go to it."""

    def __init__(self, message: str, *, stored: Sequence[str]) -> None:
        super().__init__(message, transient=True, stored=stored)


class UnreadableSpool(ForwardError):
    """Spooled files of a series could not be read for sending (gone, unreadable, damaged).

    This node's fault, not the destination's: the delivery is retried (the files may be put
    back), and the job's other series still go meanwhile."""

    def __init__(self, message: str, *, stored: Sequence[str]) -> None:
        super().__init__(message, transient=True, stored=stored)


class ImageDeclined(DicomNodeError):
    """An image the enhancement cannot use as it is (colour, float, undecodable); the message
    names the instance and the reason, and the caller forwards it unchanged."""


class PixelsUndecodable(ImageDeclined):
    """An image whose pixel data cannot be decoded (cut short, damaged): unlike a colour
    image or a report, a file a user would want to hear about."""


class ReportNotBuilt(DicomNodeError):
    """highdicom refused the metrics SR of a derived series (a value of the images' headers it
    does not take): the series does not go out, its images' sources go as they came."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (a library's can run to pages), or its
    type's name when it has none: what an error naming a file or setting quotes of it."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
