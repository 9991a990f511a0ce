"""The operator's HTTP endpoint of a running node: /metrics, /healthz, /readyz.

A real `dicomnode serve` with `[http] enabled`, a real storescu and a real Orthanc; /metrics is
parsed with prometheus_client's own parser, and its values are compared before and after a
series flows through.
"""

import re
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread

from tests.conftest import pacs_destination
from tests.support.dcmtk import echoscu, storescu
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.metrics import Scrape, http_get, http_head
from tests.support.orthanc import Orthanc
from tests.support.scu import c_store, open_association
from tests.support.series import sop_instance_uid, write_ct_series

HTTP_ON = {"enabled": True}


def test_metrics_follow_a_series_from_storescu_to_orthanc(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)], http=HTTP_ON, enhance={"methods": ["baseline"]}
    ).start()
    series = write_ct_series(tmp_path / "series", 3)

    before = Scrape(node.http_port)
    assert before.types["dicomnode_instances_received"] == "counter"
    assert before.types["dicomnode_stage_seconds"] == "histogram"
    assert before.types["dicomnode_jobs"] == "gauge"
    assert before.value("dicomnode_instances_received_total") == 0
    assert before.value("dicomnode_jobs", status="done", part="originals") == 0
    assert before.value("dicomnode_database_up") == 1
    assert before.value("dicomnode_disk_free_bytes") > 0

    sent = storescu(node.port, series)
    assert sent.returncode == 0, sent.stderr
    wrong_ae = storescu(node.port, series[0], called_aet="NOT-THE-NODE")
    assert wrong_ae.returncode != 0
    node.wait_for_parts(derived="done")

    after = Scrape(node.http_port)
    assert after.value("dicomnode_instances_received_total") == len(series)
    # What came over the network: at least the pixels of each 16-bit image.
    pixels = sum(2 * 128 * 128 for _ in series)
    assert after.value("dicomnode_received_bytes_total") >= pixels
    assert after.value("dicomnode_associations_rejected_total", reason="called_aet_unknown") == 1
    assert after.value("dicomnode_jobs", status="done", part="originals") == 1
    assert after.value("dicomnode_jobs", status="done", part="derived") == 1
    assert after.value("dicomnode_jobs_queued") == 0
    assert after.value("dicomnode_jobs_oldest_queued_age_seconds") == 0
    # The originals and the derived series (+ its report), one delivery row each, both done.
    assert after.value("dicomnode_deliveries", destination="pacs", status="done") == 2
    assert after.value("dicomnode_deliveries", destination="pacs", status="dead") == 0
    assert after.value("dicomnode_stage_seconds_count", stage="load", method="") == 1
    for stage in ("infer", "measure", "write"):
        assert after.value("dicomnode_stage_seconds_count", stage=stage, method="baseline") == 1
    assert after.value("dicomnode_stage_seconds_count", stage="forward", method="") == 2
    # 3 originals, then 3 derived images and their metrics report, each stored plainly.
    forwarded = "dicomnode_instances_forwarded_total"
    assert after.value(forwarded, destination="pacs", outcome="stored") == 3 + 3 + 1
    assert after.value(forwarded, destination="pacs", outcome="refused") == 0
    [model] = after.labels_of("dicomnode_model_info")
    assert model["method"] == "baseline" and model["device"] == "CPU"
    assert model["version"].startswith("baseline")

    assert http_get(node.http_port, "/healthz") == (200, "ok\n")
    assert http_get(node.http_port, "/readyz") == (200, "ready\n")
    assert http_get(node.http_port, "/nothing")[0] == 404


def test_a_full_disk_is_counted_as_refusals_and_makes_the_node_not_ready(
    node_factory, tmp_path: Path
) -> None:
    petabyte = 10**9
    node = node_factory([], http=HTTP_ON, node={"min_free_disk_mb": petabyte}).start()
    [instance] = write_ct_series(tmp_path / "series", 1)

    status = c_store(node.port, instance)
    assert status is not None and int(status.Status) == 0xA700

    scrape = Scrape(node.http_port)
    assert scrape.value("dicomnode_instances_refused_total", reason="disk_full") == 1
    assert scrape.value("dicomnode_instances_received_total") == 0
    assert http_get(node.http_port, "/healthz")[0] == 200
    code, reason = http_get(node.http_port, "/readyz")
    assert code == 503
    assert f"below node.min_free_disk_mb={petabyte}" in reason


def test_a_spool_that_takes_no_write_makes_the_node_not_ready(node_factory) -> None:
    """A disk turned read-only or gone refuses every store while its free space looks fine:
    /readyz said "ready" throughout."""
    node = node_factory([], http=HTTP_ON).start()
    assert http_get(node.http_port, "/readyz") == (200, "ready\n")
    identity = node.data_dir / "spool" / "spool-identity"
    identity.rename(identity.with_name("away"))  # as a disk unmounted under the node
    code, reason = http_get(node.http_port, "/readyz")
    assert code == 503 and "disk: the spool is not there" in reason
    identity.with_name("away").rename(identity)
    assert http_get(node.http_port, "/readyz") == (200, "ready\n")
    assert not list((node.data_dir / "spool" / "tmp").iterdir())  # no probe left behind


def test_head_answers_what_get_would_without_the_body(node_factory) -> None:
    """Monitors and load balancers probe with HEAD: it got 501 "Unsupported method"."""
    node = node_factory([], http=HTTP_ON).start()
    assert http_head(node.http_port, "/readyz") == (200, len(b"ready\n"), b"")
    assert http_head(node.http_port, "/healthz") == (200, len(b"ok\n"), b"")
    status, length, body = http_head(node.http_port, "/metrics")
    assert status == 200 and length > 1000 and body == b""
    assert http_head(node.http_port, "/nothing")[::2] == (404, b"")


def test_a_connection_over_the_per_address_cap_is_counted_with_its_reason(node_factory) -> None:
    node = node_factory([], http=HTTP_ON, node={"max_associations_per_address": 1}).start()
    # The start-up port probe counts against the cap until the node has seen it close.
    deadline = time.monotonic() + 10
    while "connection closed before any request" not in node.log():
        assert time.monotonic() < deadline, node.log()[-2000:]
        time.sleep(0.05)
    held = open_association(node.port)
    try:
        assert held.is_established
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as second:
            assert second.recv(1) == b""  # closed by the node at once
    finally:
        held.release()

    scrape = Scrape(node.http_port)
    assert scrape.value("dicomnode_connections_aborted_total", reason="per_address_cap") == 1
    assert scrape.value("dicomnode_connections_aborted_total", reason="stalled") == 0


def test_readyz_answers_in_time_while_the_database_takes_no_write_and_metrics_still_read(
    node_factory,
) -> None:
    """Another process holds SQLite's write lock past the check's timeout: the node cannot
    record anything now, so /readyz says 503 in time; the job tables are still read (a scrape
    takes no write lock: on a year's database it held up the stores). A scrape whose read
    hangs is `tests/unit/test_observe.py`'s."""
    node = node_factory([], http={**HTTP_ON, "check_timeout_seconds": 1}).start()
    assert http_get(node.http_port, "/readyz")[0] == 200

    holder = sqlite3.connect(node.data_dir / "dicomnode.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        code, reason = http_get(node.http_port, "/readyz")
        assert code == 503
        assert "http.check_timeout_seconds=1" in reason
        assert http_get(node.http_port, "/healthz")[0] == 200  # alive, just not ready
        scrape = Scrape(node.http_port)
        assert scrape.value("dicomnode_database_up") == 1
        assert scrape.value("dicomnode_jobs_queued") == 0
        assert scrape.value("dicomnode_disk_free_bytes") > 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    deadline = time.monotonic() + 30
    while (answer := http_get(node.http_port, "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    assert Scrape(node.http_port).value("dicomnode_database_up") == 1


def test_serve_exits_2_naming_http_port_when_the_port_is_taken(node_factory) -> None:
    node = node_factory([], http=HTTP_ON)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", node.http_port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "dicomnode", "serve", "--config", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"setting http.port: cannot listen on 127.0.0.1:{node.http_port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not node.data_dir.exists()  # refused before a database or spool was made


def test_the_endpoint_is_off_unless_enabled(node_factory) -> None:
    node = node_factory([]).start()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", node.http_port)) != 0
    assert echoscu(node.port).returncode == 0  # the node itself is up


def test_what_a_pacs_made_of_each_instance_is_counted_and_its_remarks_logged(
    node_factory, tmp_path: Path
) -> None:
    """A warning status (stored, with a remark) is named in the `forwarded` line; a refusal is
    counted as such, by destination, every outcome exported from the start."""
    faulty = FaultyScp().start()
    try:
        node = node_factory([faulty.destination()], http=HTTP_ON).start()
        before = Scrape(node.http_port)
        exported = before.labels_of("dicomnode_instances_forwarded_total")
        assert {"destination": "faulty", "outcome": "broken_off"} in exported
        assert len(exported) == 7

        first = write_ct_series(tmp_path / "first", 3)
        coerced = sop_instance_uid(first[1])
        series = str(dcmread(first[0], stop_before_pixels=True).SeriesInstanceUID)
        faulty.behave(Behaviour(status_for={coerced: 0xB000}))
        assert storescu(node.port, first).returncode == 0
        node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
        assert re.search(
            rf"forwarded job=1 destination=faulty series={re.escape(series)} instances=3 "
            r"warnings=1 seconds=\S+: "
            rf"0xB000 \(coercion of data elements\) for sop={coerced}$",
            node.log(),
            re.M,
        )

        second = write_ct_series(tmp_path / "second", 2)
        faulty.behave(Behaviour(status=0xC000))
        assert storescu(node.port, second).returncode == 0
        node.wait_for_jobs(lambda jobs: any(job["status"] == "dead" for job in jobs))
        after = Scrape(node.http_port)
    finally:
        faulty.stop()
    forwarded = "dicomnode_instances_forwarded_total"
    assert after.value(forwarded, destination="faulty", outcome="stored") == 2
    assert after.value(forwarded, destination="faulty", outcome="warning") == 1
    assert after.value(forwarded, destination="faulty", outcome="refused") == 2
    assert after.value(forwarded, destination="faulty", outcome="deferred") == 0


def test_slow_http_clients_are_bounded_cut_off_and_leave_no_traceback(node_factory) -> None:
    """1,018 clients sending a header byte every 4 s held a thread and a file descriptor each
    for ever, until the DICOM listener could accept nobody; 16 from one host held every slot,
    and the probes failed; a client gone mid-answer wrote socketserver's traceback to the
    log."""
    node = node_factory([], http=HTTP_ON).start()

    def connect(source: str) -> socket.socket:
        return socket.create_connection(
            ("127.0.0.1", node.http_port), timeout=5, source_address=(source, 0)
        )

    def refused_at_once(source: str) -> bool:
        with connect(source) as extra:
            extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return extra.recv(100) == b""  # over a limit: closed at once, not queued

    # One host's slow clients take its 4 slots, and the probes from another are still answered.
    slow = [connect("127.0.0.2") for _ in range(4)]
    started = time.monotonic()
    try:
        for client in slow:
            client.sendall(b"GET /metr")
        time.sleep(0.5)
        assert refused_at_once("127.0.0.2")
        assert http_get(node.http_port, "/healthz") == (200, "ok\n")
        # Three more hosts take the 16 slots in all: the next host is closed at once.
        slow += [connect(f"127.0.0.{host}") for host in (3, 4, 5) for _ in range(4)]
        for client in slow[4:]:
            client.sendall(b"GET /metr")
        time.sleep(0.5)
        assert refused_at_once("127.0.0.6")
        closed: set[int] = set()
        while len(closed) < len(slow) and time.monotonic() - started < 20:
            for index, client in enumerate(slow):
                if index in closed:
                    continue
                try:
                    client.sendall(b"i")  # a byte every second: each read is in time
                    client.settimeout(0.05)
                    if client.recv(100) == b"":
                        closed.add(index)
                except TimeoutError:
                    pass
                except OSError:
                    closed.add(index)
            time.sleep(1)
        assert len(closed) == len(slow)  # cut off by the whole request's deadline
        assert time.monotonic() - started < 16
    finally:
        for client in slow:
            client.close()
    assert echoscu(node.port).returncode == 0
    assert http_get(node.http_port, "/healthz") == (200, "ok\n")
    reset = socket.create_connection(("127.0.0.1", node.http_port))
    reset.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()  # a reset before the answer is read
    time.sleep(0.5)
    assert http_get(node.http_port, "/healthz") == (200, "ok\n")
    assert "Traceback" not in node.log()
    scrape = Scrape(node.http_port)
    assert scrape.value("dicomnode_http_connections_refused_total", reason="per_address_cap") == 1
    assert scrape.value("dicomnode_http_connections_refused_total", reason="total_cap") == 1
    said = [line for line in node.log().splitlines() if "http connection closed at once" in line]
    assert len(said) == 2 and "host=127.0.0.2 reason=per_address_cap" in said[0], said
    assert "(http.max_connections_per_address=4)" in said[0]
    assert "host=127.0.0.6 reason=total_cap (http.max_connections=16)" in said[1], said
