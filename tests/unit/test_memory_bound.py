"""The start-up warning when callers could make the listener hold more than the host has."""

from pathlib import Path

from dicomnode.config import NodeSettings
from dicomnode.memory_bound import HostMemory, host_memory, memory_warning, receive_bound

GIB = 1 << 30


def test_the_bound_is_every_association_of_every_listener_process_at_its_largest() -> None:
    node = NodeSettings(max_associations=10, max_instance_mb=2048, listener_processes=3)
    assert receive_bound(node) == 3 * 10 * 2048 * (1 << 20)
    assert receive_bound(NodeSettings(max_instance_mb=0)) is None


def test_settings_within_the_memory_say_nothing() -> None:
    node = NodeSettings(max_associations=10, max_instance_mb=2048)
    assert memory_warning(node, HostMemory(32 * GIB, "host")) is None
    assert memory_warning(node, None) is None  # unknown: nothing to compare with


def test_settings_past_the_memory_name_both_settings_and_the_limit() -> None:
    node = NodeSettings(max_associations=10, max_instance_mb=2048, listener_processes=2)
    said = memory_warning(node, HostMemory(16 * GIB, "host"))
    assert said is not None
    assert said.startswith(
        "callers may make the listener hold 40.0 GiB at once (node.max_associations=10 x "
        "node.max_instance_mb=2048 x 2 listener processes), and this host has 16.0 GiB"
    )
    said = memory_warning(node, HostMemory(4 * GIB, "/sys/fs/cgroup/memory.max"))
    assert said is not None and "the limit in /sys/fs/cgroup/memory.max is 4.0 GiB" in said


def test_no_instance_limit_is_no_bound_whatever_the_memory() -> None:
    said = memory_warning(NodeSettings(max_instance_mb=0), HostMemory(1 << 50, "host"))
    assert said is not None and said.startswith("node.max_instance_mb = 0: no bound")


def test_a_container_limit_below_the_host_memory_is_the_memory(tmp_path: Path) -> None:
    own = tmp_path / "cgroup"  # what /proc/self/cgroup says: the root
    own.write_text("0::/\n")
    host = host_memory(tmp_path, own)  # no cgroup files here: the host's
    assert host is not None and host.source == "host" and host.bytes > GIB
    (tmp_path / "memory.max").write_text("max\n")  # cgroup v2 without a limit
    assert host_memory(tmp_path, own) == host
    (tmp_path / "memory.max").write_text(f"{GIB}\n")
    assert host_memory(tmp_path, own) == HostMemory(GIB, str(tmp_path / "memory.max"))
    (tmp_path / "memory.max").unlink()
    (tmp_path / "memory").mkdir()
    v1 = tmp_path / "memory" / "memory.limit_in_bytes"
    v1.write_text("9223372036854771712\n")  # cgroup v1 without a limit
    assert host_memory(tmp_path, own) == host
    v1.write_text(f"{2 * GIB}\n")
    assert host_memory(tmp_path, own) == HostMemory(2 * GIB, str(v1))
    v1.write_text(f"{host.bytes * 2}\n")  # above the host's: the host's
    assert host_memory(tmp_path, own) == host


def test_a_systemd_units_limit_is_found_in_its_own_cgroup(tmp_path: Path) -> None:
    own = tmp_path / "cgroup"
    own.write_text("0::/system.slice/dicomnode.service\n")
    unit = tmp_path / "system.slice" / "dicomnode.service"
    unit.mkdir(parents=True)
    (unit / "memory.max").write_text(f"{3 * GIB}\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert host_memory(tmp_path, own) == HostMemory(3 * GIB, str(unit / "memory.max"))
    assert host_memory(tmp_path, tmp_path / "no-such-file") == host_memory(tmp_path, own / "x")


def test_a_cgroup_v1_limit_is_found_in_the_memory_controllers_folder(tmp_path: Path) -> None:
    own = tmp_path / "cgroup"
    own.write_text("5:devices:/\n4:memory:/docker/abc\n0::/\n")
    group = tmp_path / "memory" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text(f"{5 * GIB}\n")
    assert host_memory(tmp_path, own) == HostMemory(5 * GIB, str(group / "memory.limit_in_bytes"))
