"""Every way a peer can be out of reach, as `dicomnode echo` and a job's error say it: one line
naming the host and the cause, exit 1, no traceback unless --debug."""

import time
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import build_context, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification

from dicomnode.config import Destination, Settings
from dicomnode.errors import ForwardError
from dicomnode.forward.associate import open_association
from tests.support.cli import dicomnode
from tests.support.dcmtk import storescu
from tests.support.faulty_scp import FaultyScp
from tests.support.node import write_config
from tests.support.ports import free_port
from tests.support.silent_peers import silent_listener, unanswered_connect

BAD_HOST = {"name": "badhost", "ae_title": "PACS", "host": "pacs.invalid", "port": 104}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Our node as OURNODE, with short timeouts and a destination whose host does not resolve."""
    return write_config(
        tmp_path / "echo.toml",
        {
            "node": {"ae_title": "OURNODE", "data_dir": str(tmp_path / "data")},
            "network": {"connect_timeout": 1, "acse_timeout": 2},
            "enhance": {"methods": []},
        },
        [BAD_HOST],
    )


def echo(config: Path, target: str, *options: str, debug: bool = False) -> tuple[int, str]:
    root = ["--debug"] if debug else []
    result = dicomnode(*root, "echo", target, *options, "--config", str(config))
    return result.returncode, result.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_echo_names_a_host_that_does_not_resolve_and_shows_a_traceback_only_with_debug(
    config: Path,
) -> None:
    code, stderr = echo(config, "badhost")
    assert code == 1
    assert "cannot resolve host 'pacs.invalid' of PACS@pacs.invalid:104" in one_line(stderr)

    code, stderr = echo(config, "badhost", debug=True)
    assert code == 1 and "Traceback" in stderr and "gaierror" in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: cannot resolve host")


def test_echo_says_connection_refused_when_nothing_listens(config: Path) -> None:
    port = free_port()
    code, stderr = echo(config, f"127.0.0.1:{port}")
    assert code == 1
    line = one_line(stderr)
    assert f"connection refused by 127.0.0.1:{port}" in line and "no answer" not in line


def test_echo_says_no_answer_within_the_connect_timeout_when_the_host_is_silent(
    config: Path,
) -> None:
    with unanswered_connect() as port:
        code, stderr = echo(config, f"127.0.0.1:{port}")
    assert code == 1
    line = one_line(stderr)
    assert f"no answer from 127.0.0.1:{port} within 1 s (network.connect_timeout)" in line
    assert "refused" not in line


def test_echo_says_the_peer_took_the_connection_but_never_answered_the_request(
    config: Path,
) -> None:
    with silent_listener() as port:
        code, stderr = echo(config, f"127.0.0.1:{port}")
    assert code == 1
    assert "did not answer the association request within 2 s (network.acse_timeout)" in (
        one_line(stderr)
    )


def test_echo_rejected_gives_the_peers_reason_and_our_calling_ae_title(config: Path) -> None:
    picky = FaultyScp(allowed_calling_aets=["SOMEONE"]).start()
    try:
        code, stderr = echo(config, f"127.0.0.1:{picky.port}", "--called-aet", "FAULTY")
    finally:
        picky.stop()
    assert code == 1
    line = one_line(stderr)
    assert f"association rejected by FAULTY@127.0.0.1:{picky.port}" in line
    assert "Rejected Permanent, Service User: Calling AE title not recognised" in line
    assert "we called as 'OURNODE'" in line


def test_a_rejection_read_after_the_peer_closed_is_still_reported_as_the_rejection() -> None:
    """pynetdicom looks whether the socket is still connected before it reads the answer: a
    peer that rejects and closes at once (Orthanc, for an unknown called AE title) can be
    faster, and the rejection was reported as "closed the connection without answering".
    Here the look is held back until the peer has rejected and the socket is closed."""

    def after_the_rejection_closed_the_socket(event: Event) -> None:
        dul, deadline = event.assoc.dul, time.monotonic() + 10
        while (dul.to_user_queue.empty() or dul.socket._is_connected) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)

    picky = FaultyScp(allowed_calling_aets=["SOMEONE"]).start()
    destination = Destination(name="picky", ae_title="FAULTY", host="127.0.0.1", port=picky.port)
    try:
        with pytest.raises(ForwardError) as failure:
            open_association(
                destination,
                Settings(),
                [build_context(Verification)],
                "picky",
                None,
                handlers=[(evt.EVT_REQUESTED, after_the_rejection_closed_the_socket)],
            )
    finally:
        picky.stop()
    assert str(failure.value).startswith("association rejected by picky: Rejected Permanent")
    assert "Calling AE title not recognised" in str(failure.value)


def test_deliveries_name_the_host_and_the_cause_and_start_warns_of_the_bad_host(
    node_factory, ct_series: list[Path]
) -> None:
    down_port = free_port()
    down: dict[str, Any] = {"name": "down", "ae_title": "PACS", "host": "127.0.0.1"}
    node = node_factory([BAD_HOST, {**down, "port": down_port}], retry={"max_attempts": 1}).start()
    assert storescu(node.port, ct_series[:2]).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "dead")

    errors = {d["destination"]: d["error"] for d in job["deliveries"]}
    assert errors["badhost"].startswith("cannot resolve host 'pacs.invalid' of badhost (")
    assert f"connection refused by 127.0.0.1:{down_port}" in errors["down"]
    assert "internal error" not in job["error"]
    log = node.log()
    assert "WARNING dicomnode.node destination badhost: host pacs.invalid does not resolve" in log
    assert "Traceback" not in log
