"""The on-disk layout and the only code that decides file names.

Every received instance is written as `instances/<study>/<series>/<sop>.dcm` under the spool
root: first to `tmp/`, then fsync'd, atomically renamed into place and its directory fsync'd, so a
file that exists under its final name is complete and survives a crash or power loss. Names are
built only from UIDs that passed `validate_uid`, so no sender can steer a path outside the spool.

A job's outputs are written the same way, to `outbox/<job id>/<attempt>/<series>/<sop>.dcm`: each
attempt at the job (each claim of it) writes to a folder of its own, so an attempt whose worker
was paused past its lease, and which another worker has since done again, cannot replace or
delete what the later attempt made and recorded.
"""

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dicomnode.errors import SpoolError

# PS3.5 9.1: a UID is up to 64 characters of digits and dots, components separated by dots.
# Leading zeros are tolerated here (real modalities send them); they are harmless in a path.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_LETTER = re.compile(r"[^\W\d_]")  # a letter of any script
_DIGIT = re.compile(r"\d")  # a digit of any script
# An attempt's folder in a job's outbox (`Spool.outbox_attempt`): claim number, then lease.
_ATTEMPT = re.compile(r"^attempt-([0-9]{6,})-[0-9a-f]{8}$")
# The spool's identity and generation files in its root (`spool_identity.py`).
IDENTITY_FILE = "spool-identity"
GENERATION_FILE = "spool-generation"

log = logging.getLogger(__name__)


def validate_uid(value: object, what: str) -> str:
    """Return `value` as a UID string, or raise SpoolError naming the attribute."""
    text = str(value).strip().rstrip("\x00") if value is not None else ""
    if not text or len(text) > 64 or not _UID.match(text):
        # The verdict first: a sender's status comment keeps only 64 characters.
        raise SpoolError(
            f"{what} is not a valid UID: {_uid_shape(text)} (digits and dots, <= 64 chars)"
        )
    return text


def _uid_shape(text: str) -> str:
    """A rejected UID as the log and the sender's status may show it: a sender may have put a
    name, a patient ID or a birth date there, so letters are masked (`x`) and digits too (`9`);
    dots, spaces and the rest stay, which shows what is wrong with it (`9..9`, a trailing
    space). Cut at 80 characters."""
    if not text:
        return "(empty)"
    return repr(_DIGIT.sub("9", _LETTER.sub("x", text[:80]))) + " (x: a letter, 9: a digit)"


def _claim_number(attempt: str) -> int:
    """The claim number in an attempt folder's name; SpoolError for any other name."""
    found = _ATTEMPT.match(attempt)
    if found is None:
        raise SpoolError(f"{attempt!r} is not an outbox attempt folder (outbox_attempt)")
    return int(found[1])


@dataclass(frozen=True)
class Placement:
    """A received copy under its final name whose row is not committed yet (`place_instance`):
    `settle` it once the row is, `undo` it if the row cannot be."""

    path: Path
    inode: int  # this copy's: `undo` never touches a copy placed after it
    replaced: Path | None  # a hard link to the copy it replaced, in tmp/, until settled


def listener_lock_path(data_path: Path) -> Path:
    """The file a listener locks in `data_dir`, so that a second one is refused (spool_lock)."""
    return data_path / "dicomnode.lock"


def _new_synced_file(path: Path, data: bytes, mode: int) -> None:
    """A new file (never an existing one) holding `data`, on the disk before this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# How many directories a spool remembers as made durable. A receiver process never purges, so
# it would otherwise remember every series it ever stored (about 1 KB each, for months); one it
# forgot costs a stat, and an fsync only when it was removed meanwhile.
DURABLE_DIRS_KEPT = 4096


class Spool:
    """Durable storage of received instances under one root directory."""

    def __init__(self, root: Path, identity: str | None = None) -> None:
        """`identity`: the one this spool must have (a receiver process of a node that claimed
        it); else whatever identity file it has now, if any."""
        self.root = root
        self.instances_dir = root / "instances"
        self.tmp_dir = root / "tmp"
        self.outbox_dir = root / "outbox"
        self.quarantine_dir = root / "quarantine"
        # Directories known to be on disk durably, oldest first (bounded, DURABLE_DIRS_KEPT).
        self._durable_dirs: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()
        self.identity_path = root / IDENTITY_FILE
        self.generation_path = root / GENERATION_FILE
        for directory in (self.instances_dir, self.tmp_dir, self.outbox_dir):
            self._ensure_dir(directory)
        # A spool that had its identity when this process opened it (or that the node claimed)
        # must keep it: a data disk unmounted under a running node leaves an empty folder on the
        # system disk, where an instance written would be acknowledged and then hidden by the
        # disk when it is back; another disk mounted there is another node's spool.
        self._expected = identity or self.identity()

    def identity(self) -> str | None:
        """This spool's identity (`spool_identity.py`), or None when it has none (yet)."""
        try:
            return self.identity_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def claim_identity(self, identity: str) -> str:
        """Give the spool `identity` unless it has one already; the one it has either way. The
        file is written durably and whole (another process may read it at once)."""
        with contextlib.suppress(FileExistsError):  # it has one: that one stands
            self._write_identity(identity, exclusive=True)
        claimed = self.identity()
        if claimed is None:
            raise SpoolError(f"{self.identity_path} is empty")
        self._expected = claimed
        return claimed

    def replace_identity(self, identity: str) -> None:
        """An admin's repair (`doctor --repair`): this spool now has `identity`."""
        self._write_identity(identity, exclusive=False)
        self._expected = identity

    def _write_identity(self, identity: str, *, exclusive: bool) -> None:
        """Written whole under a temporary name first; `exclusive`: FileExistsError when the
        spool has an identity file already (a hard link never replaces one)."""
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            _new_synced_file(tmp, f"{identity}\n".encode(), 0o644)
            if exclusive:
                os.link(tmp, self.identity_path)
            else:
                os.replace(tmp, self.identity_path)
            _fsync_dir(self.root)
        except FileExistsError:
            raise
        except OSError as exc:
            raise SpoolError(f"cannot write {self.identity_path}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def generation(self) -> int:
        """How many rounds of new jobs this spool has seen recorded (`spool_identity.py`)."""
        try:
            text = self.generation_path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SpoolError(f"cannot read {self.generation_path}: {exc.strerror or exc}") from exc
        try:
            return int(text or 0)
        except ValueError:
            log.warning("%s is damaged: counted as 0 until the next round", self.generation_path)
            return 0

    def record_generation(self, generation: int) -> None:
        """Write the generation whole and durably (replacing the one before)."""
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            _new_synced_file(tmp, f"{generation}\n".encode(), 0o644)
            os.replace(tmp, self.generation_path)
            _fsync_dir(self.root)
        except OSError as exc:
            raise SpoolError(f"cannot write {self.generation_path}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Raise SpoolError unless a file can be written and synced in tmp/ now: a disk turned
        read-only (an ext4 error) or gone refuses every store while its free space looks fine."""
        self.check_identity_kept()
        probe = self.tmp_dir / f"probe-{uuid.uuid4().hex}.part"  # stale_parts() sweeps leftovers
        try:
            _new_synced_file(probe, b"probe", 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot write in {self.tmp_dir}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)

    def check_identity_kept(self) -> None:
        """Raise SpoolError when the spool had an identity and has it no more: its file gone (a
        disk unmounted), or another one (another disk mounted in its place)."""
        if self._expected is None:
            return
        try:
            found = self.identity()
        except OSError as exc:
            raise SpoolError(
                f"the spool is not there: {self.identity_path}: {exc.strerror or exc}"
            ) from exc
        if found is None:
            raise SpoolError(
                f"the spool is not there: {self.identity_path} is gone (is the data disk mounted?)"
            )
        if found != self._expected:
            raise SpoolError(
                f"the spool is not there: {self.identity_path} names spool {found}, not "
                f"{self._expected} (another disk mounted in its place?)"
            )

    def holds_series(self, study_uid: str, series_uid: str) -> bool:
        """Whether the series has its folder here (an instance of it was stored): asked before
        every store, so a folder this process made durable is known without a system call."""
        uids = (
            validate_uid(study_uid, "StudyInstanceUID"),
            validate_uid(series_uid, "SeriesInstanceUID"),
        )
        folder = self.instances_dir.joinpath(*uids)
        return folder in self._durable_dirs or folder.is_dir()

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Where an instance with these (already validated) UIDs lives."""
        return self.instances_dir / study_uid / series_uid / f"{sop_uid}.dcm"

    def write_instance(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Store one instance's bytes durably and return the final path.

        An existing file with the same SOP Instance UID is replaced atomically: readers see the
        old file or the new one, never a mix.
        """
        placed = self.place_instance(study_uid, series_uid, sop_uid, data)
        self.sync_name(placed.path)
        self.settle(placed)
        return placed.path

    def place_instance(
        self, study_uid: str, series_uid: str, sop_uid: str, *parts: bytes | bytearray
    ) -> Placement:
        """`write_instance` but for the last step: the bytes are durable and under their final
        name, which becomes durable with `sync_name(path)`. The file is `parts` one after the
        other (the receiver's file meta and data set, never joined into a copy of both).

        The receiver commits the instance's row while that last fsync runs (two device flushes
        at once instead of one after the other) and answers only once both are done; a row
        whose name a power loss took is removed at the next start
        (`db.instances.forget_instances_without_files`). A copy this one replaces stays linked
        in tmp/ until `settle`, so that a row that cannot be committed (`undo`) never costs the
        copy that was acknowledged before it.
        """
        uids = (
            validate_uid(study_uid, "StudyInstanceUID"),
            validate_uid(series_uid, "SeriesInstanceUID"),
            validate_uid(sop_uid, "SOPInstanceUID"),
        )
        final = self.instance_path(*uids)
        self.check_identity_kept()
        replaced = self.tmp_dir / f"{uuid.uuid4().hex}.part"  # stale_parts() sweeps leftovers
        try:
            # The link shares the old file's mtime (days old, perhaps), but its ctime is now:
            # stale_parts() judges by ctime, so no sweep takes the link while it is needed.
            os.link(final, replaced)
        except FileNotFoundError:
            replaced = None  # a new instance (or a copy that moved series)
        except OSError as exc:
            raise SpoolError(f"cannot keep the copy at {final}: {exc.strerror or exc}") from exc
        try:
            self._write_durably(final, *parts, sync_name=False)
            inode = os.stat(final).st_ino
        except BaseException:
            if replaced is not None:
                replaced.unlink(missing_ok=True)
            raise
        return Placement(final, inode, replaced)

    def settle(self, placed: Placement) -> None:
        """The placed copy's row is committed: let go of the copy it replaced."""
        if placed.replaced is not None:
            placed.replaced.unlink(missing_ok=True)

    def undo(self, placed: Placement) -> None:
        """The placed copy's row could not be committed: put back the copy it replaced (the
        one the row still describes), or remove it if it replaced none. A copy placed after
        it (another receiver process) is left alone."""
        try:
            if os.stat(placed.path).st_ino != placed.inode:
                self.settle(placed)
            elif placed.replaced is not None:
                os.replace(placed.replaced, placed.path)
                _fsync_dir(placed.path.parent)
            else:
                placed.path.unlink()
                _fsync_dir(placed.path.parent)  # no file without a row after a power loss
        except FileNotFoundError:
            self.settle(placed)
        except OSError as exc:
            problem = exc.strerror or exc
            raise SpoolError(f"cannot undo the copy at {placed.path}: {problem}") from exc

    def sync_name(self, path: Path) -> None:
        """Make a file's name (its directory entry) durable: the step `place_instance` left."""
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise SpoolError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def outbox_path(self, job_id: int, attempt: str, series_uid: str, sop_uid: str) -> Path:
        """Where an output (derived image or report) of one attempt at a job waits to be sent."""
        return self.outbox_dir / str(int(job_id)) / attempt / series_uid / f"{sop_uid}.dcm"

    def write_outbox(
        self, job_id: int, attempt: str, series_uid: str, sop_uid: str, data: bytes
    ) -> Path:
        """Store one output instance of a job durably (same guarantees as received ones)."""
        _claim_number(attempt)
        series_uid = validate_uid(series_uid, "SeriesInstanceUID")
        sop_uid = validate_uid(sop_uid, "SOPInstanceUID")
        return self._write_durably(self.outbox_path(job_id, attempt, series_uid, sop_uid), data)

    def clear_outbox(self, job_id: int) -> None:
        """Forget all of a job's outputs (its series is purged, or the job is gone)."""
        self._remove_tree(self.outbox_dir / str(int(job_id)))

    def clear_outbox_before(self, job_id: int, attempt: str) -> None:
        """Forget the outputs of the job's attempts claimed before `attempt` (and those of a
        version that kept no attempt folders), never those of a later one: an attempt whose
        worker was paused past its lease must not touch what the attempt after it made."""
        top = self.outbox_dir / str(int(job_id))
        claim = _claim_number(attempt)
        for folder in top.iterdir() if top.is_dir() else ():
            found = _ATTEMPT.match(folder.name)
            if found is None or int(found[1]) < claim:
                self._remove_tree(folder)

    def clear_outbox_attempt(self, job_id: int, attempt: str) -> None:
        """Forget the outputs of one attempt (it lost its job, or failed)."""
        _claim_number(attempt)
        self._remove_tree(self.outbox_dir / str(int(job_id)) / attempt)

    def outbox_series(self, job_id: int, attempt: str | None) -> dict[str, list[Path]]:
        """One attempt's outputs in the outbox, by series UID (what a release or resend sends
        again); `attempt` None: those of a version that wrote series folders to the job's."""
        top = self.outbox_dir / str(int(job_id))
        if attempt is not None:
            _claim_number(attempt)  # it comes from the database: a name, never a path
            top = top / attempt
        if not top.is_dir():
            return {}
        return {
            d.name: sorted(d.glob("*.dcm"))
            for d in sorted(top.iterdir())
            if d.is_dir() and _UID.match(d.name)
        }

    @staticmethod
    def outbox_attempt(claim: int, lease_owner: str) -> str:
        """The outbox folder of the attempt made by a job's claim number `claim` (`JobRecord.
        claims`: counted by the database, so attempts sort as they were claimed whatever the
        workers' clocks) under the lease `lease_owner` (so two claims never share a folder)."""
        lease = hashlib.sha256(lease_owner.encode()).hexdigest()[:8]
        return f"attempt-{int(claim):06d}-{lease}"

    @staticmethod
    def series_uid_of(path: Path) -> str:
        """The series UID of a spooled file, received or in the outbox (its folder's name:
        both are filed by series)."""
        return path.parent.name

    def _remove_tree(self, top: Path) -> None:
        self._forget_dirs(top)  # the directories go: forget that they were made durable
        shutil.rmtree(top, ignore_errors=True)

    def _forget_dirs(self, top: Path) -> None:
        with self._lock:
            self._durable_dirs = OrderedDict(
                (d, None) for d in self._durable_dirs if d != top and top not in d.parents
            )

    def _write_durably(
        self, final: Path, *parts: bytes | bytearray, sync_name: bool = True
    ) -> Path:
        """tmp file → write `parts` → fsync → atomic rename → fsync the directory (`sync_name`)."""
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            self._ensure_dir(final.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                for part in parts:
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                # The directory went since we made it (a purge, maybe by another process):
                # forget it, make it again, and retry once.
                self._forget_dirs(final.parent)
                self._ensure_dir(final.parent)
                os.replace(tmp, final)
            if sync_name:
                _fsync_dir(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a read-only disk: the write's error is the news
                tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write {final}: {exc.strerror or exc}") from exc
        return final

    def remove(self, path: Path, written_before: float | None = None) -> bool:
        """Delete a spooled file (a duplicate that moved to another series, a purged one).

        With `written_before` (a POSIX time) a file written later is kept: it is a new copy
        that arrived while the old one was being purged. True when the file was deleted.
        """
        if self.instances_dir not in path.parents:
            raise SpoolError(f"refusing to delete {path}: outside the spool")
        try:
            if written_before is not None and path.stat().st_mtime >= written_before:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, path: Path) -> Path:
        """Move a spool file nobody can read out of the way, keeping it for inspection."""
        if self.instances_dir not in path.parents:
            raise SpoolError(f"refusing to quarantine {path}: outside the spool")
        target = self.quarantine_dir / path.relative_to(self.instances_dir)
        self._ensure_dir(target.parent)
        os.replace(path, target)
        return target

    def prune_empty_dirs(self, directories: set[Path]) -> None:
        """Remove series (then study) directories left empty by a purge."""
        for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
            for candidate in (directory, directory.parent):
                if self.instances_dir not in candidate.parents:
                    continue
                self._forget_dirs(candidate)
                try:
                    candidate.rmdir()
                except OSError:
                    break  # not empty (or already gone): leave it and its parent

    def instance_files(self) -> list[Path]:
        """Every stored instance file, sorted."""
        return sorted(Path(name) for name in self.instance_file_names())

    def instance_file_names(self) -> Iterator[str]:
        """Every stored instance file's path, as text, study folder by study folder: what
        `dicomnode doctor` checks against the database (a year's spool holds millions; a
        `Path` each, sorted, took gigabytes)."""
        for study in _entries(self.instances_dir):
            if not study.is_dir(follow_symlinks=False):
                continue
            for series in _entries(study.path):
                if not series.is_dir(follow_symlinks=False):
                    continue
                for entry in _entries(series.path):
                    if entry.name.endswith(".dcm") and entry.is_file(follow_symlinks=False):
                        yield entry.path

    def outbox_job_ids(self) -> list[int]:
        """The jobs that have outputs in the outbox."""
        return sorted(int(d.name) for d in self.outbox_dir.iterdir() if d.name.isdigit())

    def stale_parts(self, older_than_seconds: float) -> list[Path]:
        """Temp files of writes that never finished (the process died between write and rename,
        or between placing a copy and committing its row), by their ctime: the link that keeps
        a replaced copy has the old copy's mtime but the ctime of its making."""
        return sorted(
            path for path in self.tmp_dir.glob("*.part") if _older_than(path, older_than_seconds)
        )

    def remove_part(self, path: Path, older_than_seconds: float) -> bool:
        """Delete a stale temp file, if it is still older than `older_than_seconds` (it was
        listed a while ago); True when it was deleted."""
        if path.parent != self.tmp_dir:
            raise SpoolError(f"refusing to delete {path}: not a spool temp file")
        if not _older_than(path, older_than_seconds):
            return False
        path.unlink(missing_ok=True)
        return True

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _ensure_dir(self, directory: Path) -> None:
        """Create a directory and make its existence durable (fsync each new parent once)."""
        if directory in self._durable_dirs:
            return
        with self._lock:
            missing = []
            probe = directory
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            directory.mkdir(parents=True, exist_ok=True)
            for created in reversed(missing):
                _fsync_dir(created.parent)
            self._durable_dirs[directory] = None
            if len(self._durable_dirs) > DURABLE_DIRS_KEPT:
                self._durable_dirs.popitem(last=False)


def _older_than(path: Path, seconds: float) -> bool:
    """Whether the file's ctime (its last change of content, name or links) is that old; False
    for a file that is gone (renamed into place, or swept, meanwhile)."""
    try:
        return path.stat().st_ctime < time.time() - seconds
    except FileNotFoundError:
        return False


def _entries(folder: str | Path) -> list[os.DirEntry[str]]:
    """What `folder` holds; nothing when it is gone (a purge may remove it meanwhile)."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
