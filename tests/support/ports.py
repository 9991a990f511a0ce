"""Free TCP ports on loopback, picked at run time.

A port the kernel hands out for `bind(("127.0.0.1", 0))` is free at that moment only: until the
test's server binds it, the kernel may give it to an outgoing connection's local end (it lies in
the ephemeral range) or to another pytest-xdist worker's pick. So ports come from a block of their
own per worker, below the ephemeral range, taken in turn: a port is reused only after the block's
other ports were, and nothing else on the machine is handed one of them by the kernel.
"""

import itertools
import os
import socket
import time
from pathlib import Path

FIRST_PORT = 20000
PORTS_PER_WORKER = 400
_turns = itertools.count()


def _ephemeral_start() -> int:
    """Where the kernel's range for outgoing connections' ports begins (Linux; else 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_block() -> range | None:
    """This worker's ports (`gw0` or no xdist: the first block); None when no block fits."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    blocks = (_ephemeral_start() - FIRST_PORT) // PORTS_PER_WORKER
    if blocks < 1:
        return None
    start = FIRST_PORT + (int(worker) if worker.isdigit() else 0) % blocks * PORTS_PER_WORKER
    return range(start, start + PORTS_PER_WORKER)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    block = _worker_block() or range(0)
    for _ in block:
        port = block[next(_turns) % len(block)]
        if _bindable(port):
            return port
    with socket.socket() as sock:  # no block of our own, or all of it in use: the kernel's pick
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
