"""node.listener_processes: receiver processes beside the node's own listener on one port.

Real parts only: the node as a subprocess with two listener processes, four DCMTK `storescu`
processes at once, the spool and the database as the node left them.
"""

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import ON_BOTH_DATABASES
from tests.support.dcmtk import echoscu, storescu, storescu_at_once
from tests.support.metrics import Scrape
from tests.support.node import NodeProcess
from tests.support.series import sop_instance_uid, write_ct_series

TWO_LISTENERS = {"listener_processes": 2}


def receiver_pids(node: NodeProcess) -> set[int]:
    """The node's child processes that run a receiver (multiprocessing's spawned interpreters,
    not its resource tracker)."""
    children = subprocess.run(
        ["pgrep", "-P", str(node.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return {int(pid) for pid in children if "spawn_main" in _cmdline(int(pid))}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is gone for every purpose here.
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def wait_until(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@ON_BOTH_DATABASES
def test_four_senders_at_once_to_two_listener_processes_store_every_instance_once(
    node_factory, tmp_path: Path
) -> None:
    node = node_factory([], node=TWO_LISTENERS, http={"enabled": True}).start()
    node.wait_for_log("node started")
    assert len(receiver_pids(node)) == 1  # the node's own listener and one receiver process
    folders = [tmp_path / f"sender{index}" for index in range(4)]
    series = {}
    for seed, folder in enumerate(folders):
        files = write_ct_series(folder, 6, size=32, seed=seed)
        series[folder.name] = len(files)

    results = storescu_at_once(node.port, folders)

    assert [result.returncode for result in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert not any("Failed" in result.stderr for result in results)
    jobs = node.wait_for_jobs(
        lambda jobs: len(jobs) == 4 and all(job["status"] == "stored" for job in jobs)
    )
    assert sorted(job["instances"] for job in jobs) == [6, 6, 6, 6]
    assert len({job["series_uid"] for job in jobs}) == 4
    assert len(list((node.data_dir / "spool" / "instances").rglob("*.dcm"))) == 24
    # Whichever process stored them, /metrics counts them all (the receivers report theirs).
    assert wait_until(
        lambda: Scrape(node.http_port).value("dicomnode_instances_received_total") == 24
    ), Scrape(node.http_port).samples.get("dicomnode_instances_received_total")
    echoes = [echoscu(node.port) for _ in range(4)]
    assert [echo.returncode for echo in echoes] == [0, 0, 0, 0]


def test_sigterm_stops_every_listener_process_and_frees_the_port(node_factory) -> None:
    node = node_factory([], node=TWO_LISTENERS).start()
    node.wait_for_log("node started")
    receivers = receiver_pids(node)
    assert len(receivers) == 1

    assert node.stop() == 0

    assert not any(alive(pid) for pid in receivers)
    assert port_is_free(node.port)
    assert "node stopped" in node.log()


def test_a_killed_receiver_process_is_started_again_with_one_log_line(
    node_factory, tmp_path: Path
) -> None:
    node = node_factory([], node=TWO_LISTENERS).start()
    node.wait_for_log("node started")
    [victim] = receiver_pids(node)

    os.kill(victim, signal.SIGKILL)

    line = node.wait_for_log(f"(pid {victim}) exited with code -9")
    assert "receiver process 2" in line and "starting it again" in line
    node.wait_for_log("receiver process 2 started again")
    [replacement] = receiver_pids(node)
    assert replacement != victim
    # Every connection lands on a listening process again: four senders, every instance kept.
    folders = [tmp_path / f"sender{index}" for index in range(4)]
    for seed, folder in enumerate(folders):
        write_ct_series(folder, 3, size=32, seed=seed)
    assert [result.returncode for result in storescu_at_once(node.port, folders)] == [0, 0, 0, 0]
    assert len(list((node.data_dir / "spool" / "instances").rglob("*.dcm"))) == 12
    assert node.stop() == 0
    assert not alive(replacement)


def test_a_node_killed_outright_leaves_no_receiver_process_behind(node_factory) -> None:
    node = node_factory([], node=TWO_LISTENERS).start()
    node.wait_for_log("node started")
    receivers = receiver_pids(node)

    node.kill()  # SIGKILL: the node cannot tell them anything

    assert wait_until(lambda: not any(alive(pid) for pid in receivers))
    assert wait_until(lambda: port_is_free(node.port))


def test_a_second_node_on_the_port_of_one_with_listener_processes_is_refused(
    node_factory,
) -> None:
    """SO_REUSEPORT must not let another node (same user, other data_dir) share the port and
    take a share of the first one's connections without a word."""
    first = node_factory([], node=TWO_LISTENERS).start()
    first.wait_for_log("node started")
    second = node_factory([], node={**TWO_LISTENERS, "port": first.port})

    result = second.cli("serve", check=False)

    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{first.port}: Address already in use (setting "
        "node.port: another program, or another node, uses it?)"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert echoscu(first.port).returncode == 0


def test_a_row_whose_file_is_missing_is_forgotten_at_start(
    node_factory, ct_series: list[Path]
) -> None:
    """The row commits while its file's name is fsync'd; a power loss in between (here: the file
    deleted while the node is down) leaves a row without a file, for an instance whose sender
    was never answered. The next start removes that row, with one line, and keeps the others."""
    node = node_factory(
        [], completion={"series_quiet_seconds": 3600, "release_quiet_seconds": 0}
    ).start()
    assert storescu(node.port, ct_series[:3]).returncode == 0
    assert node.stop() == 0
    lost = sop_instance_uid(ct_series[1])
    [path] = (node.data_dir / "spool" / "instances").rglob(f"{lost}.dcm")
    path.unlink()

    node.start()
    line = node.wait_for_log("instance forgotten")

    assert f"sop={lost}" in line and "its spool file is missing" in line
    with sqlite3.connect(node.data_dir / "dicomnode.sqlite") as db:
        kept = {uid for (uid,) in db.execute("SELECT sop_instance_uid FROM instances")}
    assert kept == {sop_instance_uid(ct_series[0]), sop_instance_uid(ct_series[2])}


def test_a_receiver_started_again_while_the_spool_is_away_refuses_every_store(
    node_factory, tmp_path: Path
) -> None:
    """Before, a receiver process started again on an empty mount point found no identity
    there, took the folder for its spool and acknowledged stores its node refused (4 of 10);
    at the next start their rows were forgotten."""
    node = node_factory(
        [],
        node={
            **TWO_LISTENERS,
            "receive_only": True,
            "database_url": f"sqlite:///{tmp_path / 'db'}",
        },
    ).start()
    node.wait_for_log("node started")
    spool = node.data_dir / "spool"
    spool.rename(node.data_dir / "away")
    spool.mkdir()  # the bare mount point
    [victim] = receiver_pids(node)
    os.kill(victim, signal.SIGKILL)
    node.wait_for_log("receiver process 2 started again")
    folders = [tmp_path / f"sender{index}" for index in range(6)]
    for seed, folder in enumerate(folders):
        write_ct_series(folder, 1, size=32, seed=seed)
    for folder in folders:
        storescu(node.port, [next(folder.iterdir())])  # each refused: 0xA700
    assert "the spool is not there" in node.log()
    assert not list(spool.rglob("*.dcm"))  # nothing acknowledged onto the bare folder
    with sqlite3.connect(tmp_path / "db") as connection:
        assert connection.execute("SELECT count(*) FROM instances").fetchone()[0] == 0
