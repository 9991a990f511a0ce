"""DICOM TLS on loopback with real peers: DCMTK storescu into the node, the node into Orthanc."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pacs_destination
from tests.support.certificates import TestPki, make_test_pki
from tests.support.dcmtk import storescu
from tests.support.orthanc import Orthanc, OrthancTls
from tests.support.series import write_ct_series


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def tls_listener(pki: TestPki, *, require_client_certificate: bool = False) -> dict[str, object]:
    return {
        "tls_certificate": str(pki.server.certificate),
        "tls_private_key": str(pki.server.private_key),
        "tls_ca_certificates": str(pki.ca) if require_client_certificate else "",
        "tls_require_client_certificate": require_client_certificate,
    }


def storescu_tls(pki: TestPki, *, anonymous: bool = False) -> list[str]:
    """storescu options: verify the node's certificate against the CA; present ours unless
    `anonymous`."""
    client = (
        ["+tla"]
        if anonymous
        else ["+tls", str(pki.client.private_key), str(pki.client.certificate)]
    )
    return [*client, "+cf", str(pki.ca)]


def one_job_done(count: int):  # type: ignore[no-untyped-def]
    return lambda jobs: (
        len(jobs) == 1 and jobs[0]["status"] == "done" and jobs[0]["instances"] == count
    )


def spooled(node) -> int:  # type: ignore[no-untyped-def]
    return len(list((node.data_dir / "spool" / "instances").rglob("*.dcm")))


def test_tls_listener_stores_and_forwards_and_refuses_plain_tcp(
    node_factory, orthanc: Orthanc, pki: TestPki, ct_series: list[Path], tmp_path: Path
) -> None:
    node = node_factory([pacs_destination(orthanc)], node=tls_listener(pki)).start()
    node.wait_for_log("transport=tls")

    plain = storescu(node.port, write_ct_series(tmp_path / "plain", 2), timeout=30)
    assert plain.returncode != 0
    assert spooled(node) == 0
    refused = node.wait_for_log("plain DICOM to a TLS listener", timeout=10)
    assert "connection refused address=127.0.0.1:" in refused

    # A caller that starts a handshake and stalls must not hold up the next one.
    with socket.create_connection(("127.0.0.1", node.port)) as stalled:
        stalled.sendall(b"\x16")  # the first byte of a TLS record: a handshake
        sent = storescu(node.port, ct_series, extra=storescu_tls(pki), timeout=30)
    assert sent.returncode == 0, sent.stderr

    node.wait_for_jobs(one_job_done(len(ct_series)))
    assert len(orthanc.instance_ids()) == len(ct_series)


def test_mutual_tls_refuses_a_caller_without_certificate_and_keeps_serving(
    node_factory, orthanc: Orthanc, pki: TestPki, ct_series: list[Path]
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)], node=tls_listener(pki, require_client_certificate=True)
    ).start()
    node.wait_for_log("transport=tls+client-certificate")

    refused = storescu(node.port, ct_series, extra=storescu_tls(pki, anonymous=True), timeout=30)
    assert refused.returncode != 0
    # In TLS 1.3 the caller may finish (and storescu exit) before the node has checked its
    # certificate: the node's line can come a moment after.
    failure = node.wait_for_log("TLS handshake failed", timeout=10)
    assert "address=127.0.0.1:" in failure and "certificate" in failure
    assert node.log().count("TLS handshake failed") == 1
    assert spooled(node) == 0

    sent = storescu(node.port, ct_series, extra=storescu_tls(pki), timeout=30)
    assert sent.returncode == 0, sent.stderr
    node.wait_for_jobs(one_job_done(len(ct_series)))
    assert len(orthanc.instance_ids()) == len(ct_series)


@pytest.fixture
def tls_orthanc(tmp_path: Path, pki: TestPki) -> Iterator[Orthanc]:
    """An Orthanc that speaks only TLS and requires a client certificate signed by our CA."""
    tls = OrthancTls(pki.server.certificate, pki.server.private_key, pki.ca, True)
    server = Orthanc(tmp_path / "tls-orthanc", tls=tls).start()
    yield server
    server.stop()


def test_forwards_over_mutual_tls_and_a_wrong_ca_fails_with_the_tls_reason(
    node_factory, tls_orthanc: Orthanc, pki: TestPki, ct_series: list[Path]
) -> None:
    client = {
        "tls": True,
        "tls_certificate": str(pki.client.certificate),
        "tls_private_key": str(pki.client.private_key),
    }
    good = {**pacs_destination(tls_orthanc), **client, "tls_ca_certificates": str(pki.ca)}
    wrong = {
        **pacs_destination(tls_orthanc, "wrong-ca"),
        **client,
        "tls_ca_certificates": str(pki.other_ca),
    }
    node = node_factory([good, wrong]).start()
    sent = storescu(node.port, ct_series)
    assert sent.returncode == 0, sent.stderr

    def delivered_and_refused(jobs: list[dict[str, object]]) -> bool:
        if len(jobs) != 1:
            return False
        status = {d["destination"]: d for d in jobs[0]["deliveries"]}  # type: ignore[index]
        return status.get("pacs", {}).get("status") == "done" and bool(
            status.get("wrong-ca", {}).get("error")
        )

    [job] = node.wait_for_jobs(delivered_and_refused)
    assert len(tls_orthanc.instance_ids()) == len(ct_series)
    [refused] = [d for d in job["deliveries"] if d["destination"] == "wrong-ca"]
    where = f"wrong-ca (ORTHANC@127.0.0.1:{tls_orthanc.dicom_port})"
    assert refused["error"].startswith(f"TLS handshake with {where} failed: certificate verify")
    assert refused["status"] in ("failed", "dead")

    assert node.cli("echo", "pacs").returncode == 0
    echo = node.cli("echo", "wrong-ca", check=False)
    assert echo.returncode == 1 and "certificate verify failed" in echo.stderr


def test_unusable_tls_files_stop_serve_with_exit_2_naming_the_setting(
    node_factory, pki: TestPki
) -> None:
    mismatched = {**tls_listener(pki), "tls_private_key": str(pki.client.private_key)}
    node = node_factory([], node=mismatched)
    result = node.cli("serve", check=False)
    assert result.returncode == 2
    assert "node.tls_private_key" in result.stderr and "client.key" in result.stderr

    not_pem = {**tls_listener(pki), "tls_certificate": str(pki.server.private_key)}
    result = node_factory([], node=not_pem).cli("serve", check=False)
    assert result.returncode == 2 and "node.tls_certificate" in result.stderr

    bad_ca = {
        "name": "p",
        "ae_title": "P",
        "host": "127.0.0.1",
        "port": 1,
        "tls": True,
        "tls_ca_certificates": str(pki.client.private_key),
    }
    result = node_factory([bad_ca]).cli("serve", check=False)
    assert result.returncode == 2 and "destinations[0].tls_ca_certificates" in result.stderr
    shown = node.cli("config", "show", "--json", check=False)  # printed, and refused as serve does
    assert shown.returncode == 2 and "node.tls_private_key" in shown.stderr
    assert json.loads(shown.stdout)["node"]["tls_certificate"]
