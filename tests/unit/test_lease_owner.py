"""Which lapsed leases a starting process may take back at once: those of dead processes of its
own host and PID namespace (`node.py`, `this_host`, `_gone_from_here`)."""

import os
import socket
from pathlib import Path

import pytest

import dicomnode.node as node_module
from dicomnode.node import _gone_from_here, this_host


def _a_dead_pid() -> int:
    """A process id no process has now."""
    pid = os.getpid() + 10_000
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def test_a_dead_process_of_this_host_is_gone_a_live_one_or_anothers_is_not() -> None:
    dead = _a_dead_pid()
    assert _gone_from_here(f"{this_host()}:{dead}:router:1a2b3c4d")
    assert not _gone_from_here(f"{this_host()}:{os.getpid()}:router:1a2b3c4d")
    assert not _gone_from_here(f"another-host:{dead}:router:1a2b3c4d")


def test_in_a_container_the_pid_namespace_is_part_of_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two containers with one hostname (host networking): a worker's pid means nothing in the
    listener's namespace, so its live job must not be taken for a dead process's."""
    real_stat = os.stat

    def in_a_container(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if path == "/proc/self/ns/pid":
            return os.stat_result((0, 4026532451, 0, 0, 0, 0, 0, 0, 0, 0))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(node_module.os, "stat", in_a_container)
    assert this_host() == f"{socket.gethostname()}/4026532451"
    dead = _a_dead_pid()
    assert _gone_from_here(f"{socket.gethostname()}/4026532451:{dead}:w0:1a2b3c4d")
    assert not _gone_from_here(f"{socket.gethostname()}/4026532999:{dead}:w0:1a2b3c4d")
    assert not _gone_from_here(f"{socket.gethostname()}:{dead}:w0:1a2b3c4d")  # the host's own


def test_a_killed_process_its_parent_has_not_collected_yet_is_gone() -> None:
    """A worker killed and restarted before its parent waited for it: a zombie, which still
    has its pid, left its job to wait out the whole lease."""
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not _gone_from_here(f"{this_host()}:{child.pid}:worker:1a2b3c4d")
        child.kill()
        deadline = time.monotonic() + 10
        while "Z" not in Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2][:3]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _gone_from_here(f"{this_host()}:{child.pid}:worker:1a2b3c4d")
    finally:
        child.kill()
        child.wait()
