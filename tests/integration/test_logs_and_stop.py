"""The node's log and its stop: UTC times, quiet libraries, and a stop that says what it waits for.

The node runs as `dicomnode serve` in a subprocess; signals are sent to it as an admin's Ctrl-C
(SIGINT) or a service manager (SIGTERM) would.
"""

import ctypes
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, build_context
from pynetdicom.association import Association

from tests.support.dcmtk import StoreScp, storescu
from tests.support.node import NodeProcess, part_of
from tests.support.ports import free_port

UTC_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) ")


def _storing_association(port: int, path: Path) -> Association:
    """An association that may store `path`'s kind of instance, kept open by the test."""
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.requested_contexts = [
        build_context(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    ]
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    return assoc


def test_sigint_waits_for_the_association_in_progress_and_stops_cleanly(
    node_factory, ct_series: list[Path]
) -> None:
    node: NodeProcess = node_factory([]).start()
    assoc = _storing_association(node.port, ct_series[0])
    node.signal(signal.SIGINT)

    line = node.wait_for_log("stopping (SIGINT)")
    assert "waiting up to 60 s (node.stop_timeout_seconds)" in line
    assert "1 association(s) receiving" in line
    assert "Ctrl-C again exits at once" in line
    # The sender finishes its association: what it sends meanwhile is stored and acknowledged.
    status = assoc.send_c_store(ct_series[0])
    assert status.Status == 0x0000
    assoc.release()

    assert node.wait_exit() == 0
    log = node.log()
    assert "node stopped" in log
    assert "Traceback" not in log and "cannot schedule new futures" not in log


def test_a_second_ctrl_c_exits_at_once_and_says_what_that_costs(
    node_factory, ct_series: list[Path]
) -> None:
    node: NodeProcess = node_factory([]).start()
    assoc = _storing_association(node.port, ct_series[0])
    try:
        node.signal(signal.SIGINT)
        node.wait_for_log("stopping (SIGINT)")
        node.signal(signal.SIGINT)
        assert node.wait_exit(timeout=15) == 1
    finally:
        assoc.abort()
    line = node.wait_for_log("forced exit (second SIGINT)")
    assert "1 association(s) receiving" in line
    assert "jobs in progress resume when this host's node starts again" in line
    assert "instances being received were not acknowledged" in line
    assert "node stopped" not in node.log()


def test_a_stop_that_overruns_node_stop_timeout_seconds_exits_anyway(
    node_factory, ct_series: list[Path]
) -> None:
    node: NodeProcess = node_factory([], node={"stop_timeout_seconds": 2}).start()
    assoc = _storing_association(node.port, ct_series[0])
    try:
        node.signal(signal.SIGTERM)
        assert node.wait_exit(timeout=20) == 1
    finally:
        assoc.abort()
    assert "SIGTERM again exits at once" in node.wait_for_log("stopping (SIGTERM)")
    node.wait_for_log("forced exit (still waiting after 2 s (node.stop_timeout_seconds))")


def test_log_lines_carry_utc_times_and_libraries_only_speak_up_from_warning(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    # A destination nobody listens on and one that rejects every association: pynetdicom's own
    # lines for these must not double ours.
    down = {"name": "down", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()}
    with StoreScp(tmp_path / "refusing", options=("--refuse",)) as refusing:
        rejects = {"name": "rejects", "ae_title": "R", "host": "127.0.0.1", "port": refusing.port}
        # baseline builds a metrics SR with highdicom, which narrates attribute copies at INFO.
        node: NodeProcess = node_factory(
            [down, rejects], enhance={"methods": ["baseline"], "self_check": False}
        ).start()
        assert storescu(node.port, ct_series).returncode == 0
        node.wait_for_jobs(
            lambda jobs: (
                part_of(jobs, "derived").get("status") == "failed"
                and part_of(jobs, "originals").get("status") == "failed"
            ),
            timeout=180,
        )
        node.stop()

    lines = node.log().splitlines()
    assert lines and all(UTC_LINE.match(line) for line in lines if line[:1].isdigit())
    assert any(" DEBUG dicomnode." in line for line in lines)  # ours at logging.level
    library_lines = [line for line in lines if re.search(r" (DEBUG|INFO) (?!dicomnode)", line)]
    assert library_lines == []
    assert "delivery failed job=" in node.log()
    assert "TCP Initialisation Error" not in node.log()
    assert "unable to connect to remote" not in node.log()
    assert "destination=rejects" in node.log() and "rejected" in node.log()
    assert " pynetdicom" not in node.log()  # "Association Rejected", "Result: ...", "Reason: ..."


def _logging_probe(third_party_level: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """configure_logging in a fresh process, then a library's INFO line and TF's variable."""
    code = (
        "import logging, os\n"
        "from dicomnode.cli.logs import configure_logging\n"
        f"configure_logging('DEBUG', {third_party_level!r})\n"
        "logging.getLogger('highdicom.base').info('copy attributes')\n"
        "logging.getLogger('dicomnode.probe').debug('ours')\n"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**environ, **env},
    )


def test_third_party_level_and_tensorflow_core_logging_follow_the_setting() -> None:
    quiet = _logging_probe("WARNING", {})
    assert "copy attributes" not in quiet.stderr and "ours" in quiet.stderr
    assert quiet.stdout.strip() == "3"  # TensorFlow's C++ core silent
    chatty = _logging_probe("INFO", {})
    assert "INFO highdicom.base copy attributes" in chatty.stderr
    assert chatty.stdout.strip() == "0"
    # The user's own TF_CPP_MIN_LOG_LEVEL wins.
    assert _logging_probe("WARNING", {"TF_CPP_MIN_LOG_LEVEL": "1"}).stdout.strip() == "1"


def test_importing_tensorflow_prints_no_cpp_lines_and_keeps_ours() -> None:
    code = (
        "import logging\n"
        "from dicomnode.cli.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "from dicomnode.imaging.srcnn import import_tensorflow\n"
        "import_tensorflow()\n"
        "logging.getLogger('dicomnode.probe').info('after the import')\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=environ,
    )
    assert result.stderr.splitlines() and all(
        UTC_LINE.match(line) for line in result.stderr.splitlines()
    ), result.stderr
    assert "INFO dicomnode.probe after the import" in result.stderr


def _other_threads(pid: int) -> list[int]:
    """The ids of a process's threads other than its main one."""
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]


def test_a_sigterm_the_kernel_hands_to_another_thread_still_stops_the_node(node_factory) -> None:
    """A signal sent to a process goes to whichever of its threads the kernel picks; Python runs
    the handler on the main thread only when that thread next runs bytecode, so a main thread
    blocked in an untimed wait never would (a CI run saw a node ignore SIGTERM for 30 s)."""
    node: NodeProcess = node_factory([]).start()
    others = _other_threads(node.pid)
    assert others, "the node runs threads besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(node.pid, others[0], signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
    assert node.wait_exit(timeout=20) == 0
    node.wait_for_log("node stopped")
