"""What callers may make the listener hold in memory at once, against what the host has.

Each association may hold up to `node.max_instance_mb` of P-DATA for a message the node has not
answered yet (`receive/guard.py`), and there may be `node.max_associations` of them in each
listener process. Past the host's memory (or its container's limit) a few callers sending large
instances at once end the node by the kernel's OOM killer: every association at once, and a
restart. Nothing acknowledged is lost then, but nobody can send meanwhile. So the node says at
start, once, when its settings allow that, and which settings bound it.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from dicomnode.config import NodeSettings

_CGROUP = Path("/sys/fs/cgroup")
_OWN_CGROUP = Path("/proc/self/cgroup")
_GIB = 1 << 30


@dataclass(frozen=True)
class HostMemory:
    """The memory the node's processes may use: the host's, or its cgroup's limit if lower."""

    bytes: int
    source: str  # "host" or the cgroup file that set it


def host_memory(cgroup_root: Path = _CGROUP, own_cgroup: Path = _OWN_CGROUP) -> HostMemory | None:
    """The host's physical memory, or the memory limit of this process's cgroup (a container's
    `mem_limit`, a systemd unit's `MemoryMax`) when that is lower; None when neither can be
    read. `own_cgroup`: the file that names this process's cgroup (`/proc/self/cgroup`)."""
    try:
        found: HostMemory | None = HostMemory(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host"
        )
    except (ValueError, OSError):
        found = None
    for path in _limit_files(cgroup_root, own_cgroup):
        limit = _cgroup_limit(path)
        if limit is not None and (found is None or limit < found.bytes):
            found = HostMemory(limit, str(path))
    return found


def _limit_files(cgroup_root: Path, own_cgroup: Path) -> list[Path]:
    """Where a memory limit of this process may be written: its own cgroup v2 folder (in a
    container with its own cgroup namespace that is the root), the root's, and cgroup v1's."""
    files = [cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"]
    try:
        lines = own_cgroup.read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        fields = line.strip().split(":", 2)
        if len(fields) != 3 or not fields[2].lstrip("/"):
            continue
        controllers, own = fields[1], fields[2].lstrip("/")
        if controllers == "":  # cgroup v2: "0::<path>"
            files.insert(0, cgroup_root / own / "memory.max")
        elif "memory" in controllers.split(","):  # cgroup v1: "4:memory:<path>"
            files.insert(0, cgroup_root / "memory" / own / "memory.limit_in_bytes")
    return files


def _cgroup_limit(path: Path) -> int | None:
    """A cgroup memory limit in bytes; None for none ("max", v1's huge number) or unreadable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= 1 << 60:  # v1 says "no limit" with ~2^63
        return None
    return int(text)


def receive_bound(node: NodeSettings) -> int | None:
    """Bytes of unanswered P-DATA the node's listener processes may hold at once; None: no
    bound (`max_instance_mb = 0`)."""
    if not node.max_instance_bytes:
        return None
    return node.max_instance_bytes * node.max_associations * node.listener_process_count


def memory_warning(node: NodeSettings, memory: HostMemory | None) -> str | None:
    """What to tell the operator at start, if the settings let callers take more memory than
    there is; None when they do not (or the memory is unknown)."""
    bound = receive_bound(node)
    processes = node.listener_process_count
    per = f" x {processes} listener processes" if processes > 1 else ""
    if bound is None:
        return (
            "node.max_instance_mb = 0: no bound on what one caller's instance may make the "
            "listener hold in memory; a caller that sends without end runs the node out of memory"
        )
    if memory is None or bound <= memory.bytes:
        return None
    where = "this host has" if memory.source == "host" else f"the limit in {memory.source} is"
    return (
        f"callers may make the listener hold {bound / _GIB:.1f} GiB at once "
        f"(node.max_associations={node.max_associations} x node.max_instance_mb="
        f"{node.max_instance_mb}{per}), and {where} {memory.bytes / _GIB:.1f} GiB: a few "
        "large instances at once could end the node out of memory; lower one of them, or cap "
        "node.max_associations_per_address"
    )
