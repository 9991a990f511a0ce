"""One listener per data_dir: a second `dicomnode serve` on the same spool is refused.

Two listeners that each believe they own the spool make jobs twice and purge each other's files.
The lock is an advisory `flock` on a file in data_dir: the kernel drops it when the process ends,
however it ends, so a node killed with SIGKILL never blocks the next start. Listeners that share
a spool on purpose (`node.shared_data_dir`, `serve --shared-data-dir`) take it shared: they
exclude an exclusive one and it excludes them. Job workers (`dicomnode worker`) take none.
"""

import fcntl
import os
import socket
from pathlib import Path

from dicomnode.errors import ConfigError
from dicomnode.spool import listener_lock_path


class DataDirLock:
    """A held lock on one data_dir; `release()` (or the end of the process) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _holder(path: Path, fd: int) -> str:
    """Who holds the lock, as the refusal names it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        return f"PID {text}" if text else "another process"
    fcntl.flock(fd, fcntl.LOCK_UN)
    return "listeners started with node.shared_data_dir"


def _in_use(data_path: Path, path: Path, holder: str) -> ConfigError:
    return ConfigError(
        f"data_dir {data_path} is in use: lock file {path} is held by {holder}; stop that "
        "node or set another node.data_dir (listeners that share a spool on purpose: "
        "node.shared_data_dir = true, or `serve --shared-data-dir`, on each)"
    )


def refuse_if_held(data_path: Path, *, shared: bool = False) -> None:
    """The refusal `lock_data_dir` would give, asked before anything is made: a node started
    twice on one config hears of the other node (by its PID), not of the port that node holds.
    Nothing is created: no lock file, no data_dir (a first start has neither)."""
    path = listener_lock_path(data_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return  # none yet, or one `lock_data_dir` will name the problem of
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(data_path, path, _holder(path, fd)) from None
    finally:
        os.close(fd)  # and with it the lock this took, if it took one


def lock_data_dir(data_path: Path, *, shared: bool = False) -> DataDirLock:
    """Take the listener lock of `data_path`, or raise ConfigError naming the lock file and
    the process that holds it."""
    path = listener_lock_path(data_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise ConfigError(
            f"setting node.data_dir: cannot open lock file {path}: {exc.strerror}"
        ) from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(path, fd)
        os.close(fd)
        raise _in_use(data_path, path, holder) from None
    if not shared:
        # Who holds it, for the next one refused (a shared holder leaves the text alone).
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
    return DataDirLock(path, fd)
