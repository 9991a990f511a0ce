"""Free TCP ports on loopback, picked at run time.

A port the kernel hands out for `bind(("127.0.0.1", 0))` is free at that moment only: until the
test's server binds it, the kernel may give it to an outgoing connection's local end (it lies in
the ephemeral range), or another test process may pick it too (pytest-xdist workers, a second test
run on the same machine). So ports come from below the ephemeral range, and each pick is reserved
across processes by a lock on the port's byte of one shared file, held until the process has
made RESERVED_PICKS more picks (by then the test that asked is long over) or ends.
"""

import fcntl
import itertools
import os
import random
import socket
import tempfile
import time
from collections import deque
from pathlib import Path

FIRST_PORT = 20000
RESERVED_PICKS = 64
_LOCK_FILE = Path(tempfile.gettempdir()) / "dicomnode-test-ports.lock"
_turns = itertools.count(random.randrange(1 << 16))  # processes start at different places
_reserved: deque[int] = deque()
_lock_fd: int | None = None


def _ephemeral_start() -> int:
    """Where the kernel's range for outgoing connections' ports begins (Linux; else 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _open_lock_file() -> int:
    """The shared file, writable by every user (so one user's test run reserves against
    another's); one of this user's own when another user's is closed to it. An existing file
    is opened without O_CREAT: in a sticky /tmp, fs.protected_regular refuses O_CREAT on
    another user's file whatever its mode."""
    try:
        return os.open(_LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        pass
    except PermissionError:
        return os.open(
            _LOCK_FILE.with_name(f"{_LOCK_FILE.stem}-{os.getuid()}.lock"),
            os.O_RDWR | os.O_CREAT,
            0o600,
        )
    try:
        fd = os.open(_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:  # another process made it just now
        return _open_lock_file()
    os.fchmod(fd, 0o666)  # the umask took write from group and others
    return fd


def _reserve(port: int) -> bool:
    """Lock the port's byte of the shared file; False when another process holds it."""
    global _lock_fd
    if _lock_fd is None:
        _lock_fd = _open_lock_file()
    try:
        fcntl.lockf(_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False
    _reserved.append(port)
    if len(_reserved) > RESERVED_PICKS:
        fcntl.lockf(_lock_fd, fcntl.LOCK_UN, 1, _reserved.popleft())
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    ports = range(FIRST_PORT, _ephemeral_start())
    for _ in ports:
        port = ports[next(_turns) % len(ports)]
        if port not in _reserved and _bindable(port) and _reserve(port):
            return port
    with socket.socket() as sock:  # no room below the ephemeral range: the kernel's pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def wait_for_port_closed(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Until nothing accepts connections on the port any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                time.sleep(0.05)
        except OSError:
            return
    raise TimeoutError(f"something still listens on {host}:{port} after {timeout} s")
