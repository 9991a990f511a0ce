"""Hostile or broken callers against a running node: each attack is one a TCP connection can
make, with no accepted AE title and no certificate. Each test is bounded (seconds, tens of MB
sent) and asserts what an operator relies on: the node's memory stays within its budget, every
connection ends, the CLI and the log show hostile text literally, good senders are served.

Memory is the node process's peak resident set (VmHWM in /proc) against its resident set once
warm: the budget is `max_associations x max_instance_mb` (what the README promises) plus
OVERHEAD_MB for one extra copy of an instance while it is written and the interpreter's own
churn.
"""

import errno
import os
import re
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage

from tests.conftest import pacs_destination
from tests.support.dcmtk import echoscu, storescu
from tests.support.metrics import Scrape
from tests.support.scu import c_store
from tests.support.series import write_ct_series

# Send test files as their bytes: a deflate bomb must not be inflated by the sending side.
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_INSTANCE_MB = 5
MAX_ASSOCIATIONS = 3
OVERHEAD_MB = 40
DEFLATED = "1.2.840.10008.1.2.1.99"
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ \S+ ")


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def _limited_node(node_factory, destinations=(), **overrides):  # type: ignore[no-untyped-def]
    node = {"max_instance_mb": MAX_INSTANCE_MB, "max_associations": MAX_ASSOCIATIONS}
    node.update(overrides.pop("node", {}))
    return node_factory(list(destinations), node=node, **overrides).start()


def _warm(node, good: list[Path]) -> int:  # type: ignore[no-untyped-def]
    """Store a series (pydicom, the database and the writer all loaded); the RSS after, in MB."""
    assert storescu(node.port, good).returncode == 0
    return _kib(node.pid, "VmRSS") // 1024


def _assert_memory_bound(node, warm_mb: int) -> None:  # type: ignore[no-untyped-def]
    peak_mb = _kib(node.pid, "VmHWM") // 1024
    budget = MAX_ASSOCIATIONS * MAX_INSTANCE_MB + OVERHEAD_MB
    assert peak_mb - warm_mb <= budget, f"peak {peak_mb} MB, warm {warm_mb} MB, budget {budget}"


def _deflate_bomb(path: Path, inflated_mib: int) -> Path:
    """A CT instance in Deflated Explicit VR Little Endian whose pixels are `inflated_mib` MiB of
    zeros: a few hundred KB on the wire, written without holding the inflated bytes."""
    template = dcmread(write_ct_series(path.parent / "template", 1)[0])
    header = bytearray()
    for tag, keyword in ((0x00080016, "SOPClassUID"), (0x00080018, "SOPInstanceUID")):
        header += _explicit(tag, b"UI", str(getattr(template, keyword)).encode())
    header += _explicit(0x00080060, b"CS", b"CT")
    header += _explicit(0x0020000D, b"UI", generate_uid().encode())
    header += _explicit(0x0020000E, b"UI", generate_uid().encode())
    pixels = inflated_mib * 1024 * 1024
    header += struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, pixels)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = bytearray(deflater.compress(bytes(header)))
    zeros = bytes(1 << 20)
    for _ in range(inflated_mib):
        body += deflater.compress(zeros)
    body += deflater.flush()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = template.SOPClassUID
    meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
    meta.TransferSyntaxUID = DEFLATED
    meta.ImplementationClassUID = generate_uid()
    with path.open("wb") as stream:
        stream.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(stream, meta)  # type: ignore[arg-type]
        stream.write(body)
    return path


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _associate(port: int) -> tuple[object, socket.socket, int]:
    """A real association (CT Image Storage); its raw socket and accepted context ID."""
    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    return assoc, assoc.dul.socket.socket, context_id  # type: ignore[union-attr]


def _connect_from(address: str, port: int) -> socket.socket:
    """A TCP connection to the node from `address` (any of 127.0.0.0/8 is this host)."""
    return socket.create_connection(("127.0.0.1", port), source_address=(address, 0))


def _kernel_buffering(sock: socket.socket) -> int:
    """What may be on its way to the node without the node reading it: our send buffer and the
    node's receive buffer, which Linux grows up to tcp_rmem's maximum (32 MiB on some hosts: a
    bound of twice the budget failed under load with 11 MB sent)."""
    receive_max = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + receive_max


def _p_data(context_id: int, payload: bytes) -> bytes:
    """One P-DATA-TF with one data-set PDV, never the last fragment (PS3.8 9.3.5, E.2)."""
    item = struct.pack(">LBB", len(payload) + 2, context_id, 0x00) + payload
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the node ends the connection within `within` seconds. The socket is also our
    pynetdicom association's, whose DUL thread closes it (EBADF here) once it saw the end."""
    try:
        sock.settimeout(within)
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    except OSError as exc:
        if exc.errno == errno.EBADF:
            return True
        raise


def test_a_deflate_bomb_is_refused_with_out_of_resources_and_memory_stays_bounded(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    node = _limited_node(node_factory)
    warm_mb = _warm(node, ct_series)
    bomb = _deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=300)
    assert bomb.stat().st_size < 2 * 1024 * 1024

    status = c_store(node.port, bomb)

    assert status is not None and int(status.Status) == 0xA700
    assert f"node.max_instance_mb={MAX_INSTANCE_MB}" in status.ErrorComment
    _assert_memory_bound(node, warm_mb)
    assert echoscu(node.port).returncode == 0


def test_endless_p_data_and_an_oversized_pdu_are_aborted_within_the_budget(
    node_factory, ct_series: list[Path]
) -> None:
    node = _limited_node(node_factory)
    warm_mb = _warm(node, ct_series)

    # Fragments without the last-fragment bit, in 16 KB PDUs, well past what the node may read
    # and the two kernels may hold in their socket buffers on the way.
    assoc, sock, context_id = _associate(node.port)
    could_take = MAX_INSTANCE_MB * 1024 * 1024 + _kernel_buffering(sock)
    chunk = _p_data(context_id, bytes(16 * 1024))
    sent = 0
    try:
        while sent < could_take + 16 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    assert sent < could_take, "the node took it all"
    assoc.abort()  # type: ignore[attr-defined]

    # A PDU announcing 2 GiB (more than the maximum length we accepted).
    assoc, sock, context_id = _associate(node.port)
    sock.sendall(struct.pack(">BBL", 0x04, 0, 0x7FFFFFF0) + bytes(1 << 20))
    assert _closed_by_peer(sock, within=5)
    assoc.abort()  # type: ignore[attr-defined]

    log = node.log()
    assert "association aborted address=127.0.0.1:" in log
    assert "calling_aet=ATTACKER reason=more than" in log
    assert "(node.max_instance_mb)" in log
    assert "P-DATA-TF of 2147483632 bytes" in log
    _assert_memory_bound(node, warm_mb)
    assert echoscu(node.port).returncode == 0


def test_stalled_and_dripping_callers_are_dropped_and_a_real_sender_is_served(
    node_factory, orthanc, tmp_path: Path, ct_series: list[Path]
) -> None:
    timeout = 2
    node = _limited_node(
        node_factory,
        [pacs_destination(orthanc)],
        network={"acse_timeout": timeout, "network_timeout": timeout},
    )
    # Three callers that sent the 6 bytes of a request's PDU header and then nothing ...
    stalled = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(3)]
    for sock in stalled:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1000))
    # ... and one that drips a byte every half second (never silent for `timeout`).
    dripper = socket.create_connection(("127.0.0.1", node.port))
    started = time.monotonic()
    dropped = False
    for byte in struct.pack(">BBL", 0x01, 0, 1000) + bytes(40):
        try:
            dripper.sendall(bytes([byte]))
        except OSError:
            dropped = True
            break
        if _closed_by_peer(dripper, within=0.5):
            dropped = True
            break
    assert dropped and time.monotonic() - started < 4 * timeout
    assert all(_closed_by_peer(sock, within=2 * timeout) for sock in stalled)

    # The slots are free again: a real sender is served and its series reaches the PACS.
    assert echoscu(node.port).returncode == 0
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
    assert len(orthanc.sop_instance_uids()) == len(ct_series)
    # Refused before pynetdicom had them (they held no association's place): one line a
    # minute for the address.
    refused = [line for line in node.log().splitlines() if "of its A-ASSOCIATE-RQ" in line]
    assert len(refused) == 1, refused
    # Whichever is dropped first is logged: a stalled one (6 of 1006 bytes) or the dripper
    # (a few bytes, of its header's 6 or of the 1006 the header announced).
    assert re.search(
        r"connection dropped address=127\.0\.0\.1:\d+: (6 of 1006|\d of 6|\d+ of 1006) bytes "
        r"of its A-ASSOCIATE-RQ within network\.acse_timeout=2s$",
        refused[0],
    ), refused[0]
    assert "association aborted" not in node.log()
    for sock in [*stalled, dripper]:
        sock.close()


def test_a_caller_that_sends_a_message_a_few_bytes_at_a_time_is_dropped(node_factory) -> None:
    """Each PDU whole and in time, one every second, so neither the PDU limit nor the idle
    timer ever fires: the message as a whole comes at 16 bytes a second. Ten such callers
    held every association's place for as long as they went on (a "slowloris"); now each is
    dropped once its message has taken network_timeout at under 500 bytes a second."""
    timeout = 2
    node = _limited_node(node_factory, network={"network_timeout": timeout})
    assoc, sock, context_id = _associate(node.port)
    dropped = False
    for _ in range(30):
        try:
            sock.sendall(_p_data(context_id, bytes(16)))
        except OSError:
            dropped = True
            break
        if _closed_by_peer(sock, within=1.0):
            dropped = True
            break
    assert dropped  # after ~3 s: before, not within the 30
    assoc.abort()  # type: ignore[attr-defined]
    [line] = [line for line in node.log().splitlines() if "reason=a message of" in line]
    assert "calling_aet=ATTACKER" in line and "reason=stalled" not in line
    assert (
        f"slower than 500 bytes/s once it took longer than network.network_timeout={timeout}s"
        in line
    )
    assert echoscu(node.port).returncode == 0


def test_a_slow_message_is_dropped_once_it_took_network_timeout_not_at_its_next_fragment(
    node_factory,
) -> None:
    """Two 16-byte fragments, the second just within the idle timer, then nothing. The pace
    rule was looked at only as a fragment came, so such a caller held its place until the
    idle timer fired, about twice network_timeout after its message began; now it is
    dropped while the node waits for the rest, and the line says why."""
    timeout = 4
    node = _limited_node(node_factory, network={"network_timeout": timeout})
    assoc, sock, context_id = _associate(node.port)
    sock.sendall(_p_data(context_id, bytes(16)))
    time.sleep(timeout - 0.5)
    sock.sendall(_p_data(context_id, bytes(16)))
    # The idle timer would end it at 2 x timeout - 0.5 s from the start, 3.5 s from now.
    assert _closed_by_peer(sock, within=timeout - 1.0)
    assoc.abort()  # type: ignore[attr-defined]
    [line] = [line for line in node.log().splitlines() if "reason=a message of" in line]
    # 44 bytes: the two PDU bodies (a PDV item's 6-byte header and its 16 bytes, twice)
    assert "calling_aet=ATTACKER" in line and "reason=a message of 44 bytes in" in line
    assert echoscu(node.port).returncode == 0


def test_a_p_data_pdu_whose_item_overruns_it_is_aborted_in_one_line(node_factory) -> None:
    """A PDV item declaring 1000 bytes in a PDU that carries 52: pynetdicom logged a
    traceback of 18 lines for each such PDU, without the limit the refusals have."""
    node = _limited_node(node_factory)
    assoc, sock, context_id = _associate(node.port)
    item = struct.pack(">LBB", 1000, context_id, 0x00) + bytes(46)
    sock.sendall(struct.pack(">BBL", 0x04, 0, len(item)) + item)
    assert _closed_by_peer(sock, within=5)
    assoc.abort()  # type: ignore[attr-defined]
    log = node.log()
    reason = "reason=a P-DATA-TF whose PDV item at byte 0 declares 1000 bytes, 48 follow in the PDU"
    assert reason in log and "calling_aet=ATTACKER" in log
    assert "Traceback" not in log
    assert echoscu(node.port).returncode == 0


def _c_store_pdus(context_id: int, transfer_syntax: str, path: Path) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE request of `path` (command, then data set), encoded by
    pynetdicom as a sender would."""
    ds = dcmread(path)
    encoded = DicomBytesIO()
    encoded.is_little_endian = True
    encoded.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(encoded, ds)
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = BytesIO(encoded.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdus = []
    for data in message.encode_msg(context_id, 16382):  # P-DATA primitives
        pdu = P_DATA_TF()
        pdu.from_primitive(data)
        pdus.append(pdu.encode())
    return pdus


def test_a_caller_that_closes_in_the_middle_of_a_pdu_is_a_lost_connection_not_a_violation(
    node_factory, ct_series: list[Path]
) -> None:
    """A modality switched off, or a sender killed, halfway through a C-STORE's P-DATA-TF: its
    short PDU was parsed as if whole, and the association logged (and counted) as a protocol
    violation ("a P-DATA-TF whose items do not add up"), which it is not."""
    node = _limited_node(node_factory, http={"enabled": True})
    assoc, sock, context_id = _associate(node.port)
    syntax = assoc.accepted_contexts[0].transfer_syntax[0]  # type: ignore[attr-defined]
    command, first_data, *_ = _c_store_pdus(context_id, syntax, ct_series[0])
    sock.sendall(command + first_data[: len(first_data) // 2])
    time.sleep(0.5)  # the node has the command, and waits for the rest of the data PDU
    sock.shutdown(socket.SHUT_RDWR)
    line = node.wait_for_log("calling_aet=ATTACKER reason=aborted by the peer or the connection")
    assert "stored=0" in line
    log = node.log()
    assert "dicomnode.receive.guard association aborted" not in log
    assert "do not add up" not in log and "Traceback" not in log
    aborted = Scrape(node.http_port).value("dicomnode_connections_aborted_total", reason="protocol")
    assert aborted == 0
    assoc.abort()  # type: ignore[attr-defined]
    assert echoscu(node.port).returncode == 0


def test_connections_over_the_per_address_cap_are_refused_at_once(node_factory) -> None:
    node = _limited_node(node_factory, node={"max_associations_per_address": 2})
    # The start-up port probe counts against the cap until the node has seen it close.
    deadline = time.monotonic() + 10
    while "connection closed before any request" not in node.log():
        assert time.monotonic() < deadline, node.log()[-2000:]
        time.sleep(0.05)
    held = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
    time.sleep(0.3)
    third = socket.create_connection(("127.0.0.1", node.port))
    assert _closed_by_peer(third, within=3)
    assert "connection refused address=127.0.0.1:" in node.log()
    assert "(node.max_associations_per_address)" in node.log()
    # A flood of refused connections is one line a minute (the metrics count each one).
    more = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(30)]
    assert all(_closed_by_peer(sock, within=3) for sock in more)
    refused = [line for line in node.log().splitlines() if "connection refused address" in line]
    assert len(refused) == 1, refused
    for sock in [*held, third, *more]:
        sock.close()
    time.sleep(0.3)
    assert echoscu(node.port).returncode == 0


def test_silent_connections_past_a_bound_are_refused_and_real_callers_still_served(
    node_factory,
) -> None:
    # Each silent connection holds a descriptor and a thread for up to acse_timeout: a flood
    # of them must not take the process's descriptors (accept would then fail for everyone).
    node = _limited_node(node_factory, node={"max_associations": 2})
    deadline = time.monotonic() + 10
    while "connection closed before any request" not in node.log():  # the start-up probe
        assert time.monotonic() < deadline, node.log()[-2000:]
        time.sleep(0.05)
    # 4 x 2, from two addresses: one may hold only half (the next test)
    held = [_connect_from(f"127.0.0.{1 + n % 2}", node.port) for n in range(8)]
    time.sleep(0.3)
    extra = _connect_from("127.0.0.3", node.port)
    assert _closed_by_peer(extra, within=3)
    assert not _closed_by_peer(held[0], within=0.2)  # those already in wait their turn
    assert "reason=8 connections waiting for an A-ASSOCIATE-RQ (4 x node.max_associations)" in (
        node.log()
    )
    for sock in [*held, extra]:
        sock.close()
    time.sleep(0.3)
    assert echoscu(node.port).returncode == 0


def test_one_address_flooding_silent_connections_leaves_room_for_other_callers(
    node_factory,
) -> None:
    """A flood of connections that send nothing from one address took all the room for
    connections yet to associate, for acse_timeout each, and echoscu from anywhere else was
    refused meanwhile. One address's silent connections now hold at most half of it."""
    node = _limited_node(node_factory, node={"max_associations": 2})
    flood = [_connect_from("127.0.0.2", node.port) for _ in range(4)]  # 2 x max_associations
    time.sleep(0.3)
    more = [_connect_from("127.0.0.2", node.port) for _ in range(20)]
    assert all(_closed_by_peer(sock, within=3) for sock in more)
    assert not _closed_by_peer(flood[0], within=0.2)  # those already in wait their turn
    [line] = [line for line in node.log().splitlines() if "not sent a whole" in line]
    assert "connection refused address=127.0.0.2:" in line
    assert "reason=4 connections from this address that have not sent a whole A-ASSOCIATE-RQ" in (
        line
    )
    # Another address is served while the flood holds its half (from 127.0.0.1).
    assert echoscu(node.port).returncode == 0
    # A connection whose request is whole no longer counts: the address may begin another.
    for sock in flood:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1000) + bytes(1000))
    time.sleep(0.3)
    late = _connect_from("127.0.0.2", node.port)
    assert not _closed_by_peer(late, within=0.5)
    for sock in [*flood, *more, late]:
        sock.close()


def test_connections_that_send_a_byte_of_their_request_and_stop_hold_no_association(
    node_factory,
) -> None:
    """One byte (0x01, an A-ASSOCIATE-RQ's first) used to hand the connection to pynetdicom,
    where it held one of node.max_associations until acse_timeout: two such connections
    locked every real caller out of this node. They now count as silent until their request is
    whole, and are refused once acse_timeout passes without it."""
    node = _limited_node(
        node_factory,
        node={"max_associations": 2},
        network={"acse_timeout": 2},
        http={"enabled": True},
    )
    stalled = [_connect_from("127.0.0.2", node.port) for _ in range(4)]  # 2 x max_associations
    for sock in stalled:
        sock.sendall(b"\x01")
    time.sleep(0.3)
    more = _connect_from("127.0.0.2", node.port)
    more.sendall(b"\x01")
    assert _closed_by_peer(more, within=3)  # beyond this address's share
    assert echoscu(node.port).returncode == 0  # both associations' places are free
    assert all(_closed_by_peer(sock, within=5) for sock in stalled)
    [line] = [line for line in node.log().splitlines() if "of its A-ASSOCIATE-RQ" in line]
    assert "connection dropped address=127.0.0.2:" in line
    assert line.endswith("1 of 6 bytes of its A-ASSOCIATE-RQ within network.acse_timeout=2s")
    assert Scrape(node.http_port).value("dicomnode_connections_aborted_total", reason="stalled")
    # Most of a large request (40 of 60 KB), then nothing: still no association's place.
    large = [_connect_from("127.0.0.3", node.port) for _ in range(2)]
    for sock in large:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 60_000) + bytes(40_000))
    time.sleep(0.3)
    assert echoscu(node.port).returncode == 0
    for sock in [*stalled, more, *large]:
        sock.close()


def test_a_caller_that_does_not_speak_dicom_is_refused_at_its_first_bytes_in_one_line(
    node_factory,
) -> None:
    """An HTTP client or a scanner on the DICOM port. Before, the guard logged it twice (each
    half of its request taken for a PDU) and pynetdicom held its association's place until
    network.acse_timeout: a scanner could fill max_associations."""
    node = _limited_node(node_factory, node={"max_associations": 1})
    with socket.create_connection(("127.0.0.1", node.port)) as http:
        http.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert _closed_by_peer(http, within=3)
    assert echoscu(node.port).returncode == 0  # the one association's place is free at once
    refused = [line for line in node.log().splitlines() if "connection refused" in line]
    assert len(refused) == 1, refused
    assert "not a DICOM association request (first bytes b'GET / HT')" in refused[0]
    assert "association aborted" not in node.log()


def test_a_wrong_called_ae_title_is_rejected_and_logged(node_factory) -> None:
    node = _limited_node(node_factory)
    wrong = echoscu(node.port, called_aet="WRONGTITLE")
    assert wrong.returncode != 0 and "Association Rejected" in wrong.stderr
    assert "association rejected: called AE title is not 'DICOMNODE'" in node.log()
    assert "called_aet=WRONGTITLE" in node.log()
    assert echoscu(node.port).returncode == 0


def test_rejected_associations_from_one_address_are_logged_once_a_minute_with_a_count(
    node_factory,
) -> None:
    """A modality set up with a wrong AE title retries for days, and a caller that floods
    wrote a line per association (~1.7 GB a day): one line a minute per reason and address,
    the next saying how many more there were."""
    node = _limited_node(node_factory)
    for index in range(6):
        assert echoscu(node.port, called_aet="WRONGTITLE", calling_aet=f"X{index}").returncode
    assert echoscu(node.port).returncode == 0  # the node still serves
    rejected = [line for line in node.log().splitlines() if "association rejected" in line]
    assert len(rejected) == 1, rejected
    assert "calling_aet=X0" in rejected[0] and "address=127.0.0.1" in rejected[0]


def test_hostile_text_is_shown_literally_and_the_log_keeps_one_line_per_record(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    node = _limited_node(node_factory, enhance={"methods": ["baseline"]})
    markup = "[link=https://evil.example/]MONOCHROME2[/link]"
    [image] = write_ct_series(tmp_path / "markup", 1)
    ds = dcmread(image)
    ds.PhotometricInterpretation = markup + "\x1b[2J"
    ds.PatientBirthDate = "[/x]123456"
    ds.save_as(image)
    assert storescu(node.port, [image]).returncode == 0
    # A UID that would forge a log line of its own.
    [forger] = write_ct_series(tmp_path / "forger", 1)
    ds = dcmread(forger)
    ds.SOPInstanceUID = "1.2.3\n2099-01-01 00:00:00,000 CRITICAL dicomnode forged"
    ds.save_as(forger)
    status = c_store(node.port, forger)
    assert status is not None and int(status.Status) == 0xC000

    jobs = node.wait_for_jobs(  # no destinations: kept as "stored"
        lambda jobs: len(jobs) == 2 and all(j["status"] == "stored" for j in jobs)
    )
    derived = next(job for job in jobs if job["part"] == "derived")
    # A value that reached a job's error (as raw header text did before): written as a sender
    # could make it, then listed.
    with sqlite3.connect(node.data_dir / "dicomnode.sqlite") as db:
        db.execute(
            "UPDATE jobs SET error = ? WHERE id = ?",
            ("[/x]123456 \x1b]8;;https://evil.example\x07click\x1b]8;;\x07", derived["id"]),
        )

    listing = node.cli("jobs", "list", check=False)
    assert listing.returncode == 0, listing.stderr
    assert "[/x]123456" in listing.stdout
    assert "\x1b" not in listing.stdout and "\\x1b]8;;https://evil.example" in listing.stdout
    shown = node.cli("jobs", "show", str(derived["id"]), check=False)
    assert shown.returncode == 0, shown.stderr
    assert "PhotometricInterpretation=[link=https://evil.example/]MONOCHROME2" in shown.stdout
    assert "\x1b" not in shown.stdout and "\\x1b[2J" in shown.stdout

    lines = node.log().splitlines()
    assert not any("forged" in line and line.startswith("2099") for line in lines)
    assert any("1.2.3\\n2099-01-01" in line for line in lines)
    continuation = re.compile(r"^(Traceback|  |\S+(Error|Exception)\b|\s*$|During|The above)")
    odd = [line for line in lines if not _LOG_LINE.match(line) and not continuation.match(line)]
    assert not odd, odd[:5]


def test_files_and_folders_are_private_and_config_show_masks_the_database_password(
    node_factory, ct_series: list[Path]
) -> None:
    node = _limited_node(node_factory)
    assert storescu(node.port, ct_series[:2]).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "stored")  # no destinations
    for path in [node.data_dir, *node.data_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o007 == 0, f"{path} is {oct(mode)}"
    env = {**os.environ, "DICOMNODE_NODE_DATABASE_URL": "postgresql+psycopg://dn:s3cret@db/dn"}
    shown = subprocess.run(
        [sys.executable, "-m", "dicomnode", "config", "show", "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0 and "s3cret" not in shown.stdout
    assert "postgresql+psycopg://dn:***@db/dn" in shown.stdout


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _association_request(
    contexts: int = 1,
    syntaxes: int = 1,
    syntax: bytes = b"1.2.840.10008.1.2",
    maximum: int = 16384,
    *,
    calling: bytes = b"ATTACKER",
    abstract: bytes = b"1.2.840.10008.5.1.4.1.1.2",
    user_items: bytes = b"",
) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2) of `contexts` contexts of `abstract` (CT), each
    proposing `syntaxes` copies of `syntax`, for PDUs of at most `maximum` bytes, with
    `user_items` after the maximum length and implementation class UID."""
    body = struct.pack(">HH", 1, 0) + b"DICOMNODE".ljust(16) + calling.ljust(16) + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for number in range(contexts):
        value = struct.pack(">BBBB", (2 * number + 1) % 256, 0, 0, 0)
        value += _item(0x30, abstract)
        value += b"".join(_item(0x40, syntax) for _ in range(syntaxes))
        body += _item(0x20, value)
    user = _item(0x51, struct.pack(">L", maximum)) + _item(0x52, b"1.2.3") + user_items
    body += _item(0x50, user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _uid_field(uid: bytes) -> bytes:
    return struct.pack(">H", len(uid)) + uid


_LONG_UID = b"1." + b"2" * 70
_CT = b"1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize(
    ("request_bytes", "told"),
    [
        (_association_request(calling=b"ATT\x01CKER"), "calling AE title b'ATT\\x01CKER"),
        (_association_request(calling=b"R\xc3\xb6ntgen"), "calling AE title b'R\\xc3\\xb6ntgen"),
        (_association_request(calling=b" "), "calling AE title is empty"),
        (_association_request(syntax=_LONG_UID), "transfer syntax b'1.2222"),
        (_association_request(abstract=b"1.2.\xff"), "abstract syntax b'1.2.\\xff' (5 bytes)"),
        (_association_request(user_items=_item(0x55, b"TAB\tHERE")), "implementation version"),
        (
            _association_request(user_items=_item(0x54, _uid_field(_LONG_UID) + b"\x01\x00")),
            "SOP class UID b'1.2222",
        ),
        (
            _association_request(
                user_items=_item(
                    0x57, _uid_field(_CT) + _uid_field(b"1.2") + _uid_field(_uid_field(b"1.2.\x80"))
                )
            ),
            "SOP class UID b'1.2.\\x80'",
        ),
        (
            _association_request(
                user_items=_item(
                    0x57, _uid_field(_CT) + _uid_field(b"1.2") + _uid_field(_uid_field(b""))
                )
            ),
            "related general SOP class UID is empty",
        ),
    ],
    ids=[
        "control-character",
        "non-ascii-title",
        "empty-title",
        "long-transfer-syntax",
        "non-ascii-abstract-syntax",
        "version-name",
        "role-selection",
        "related-sop-class",
        "empty-related-sop-class",
    ],
)
def test_an_association_request_with_text_pynetdicom_cannot_decode_is_aborted_in_one_line(
    node_factory, request_bytes: bytes, told: str
) -> None:
    """pynetdicom logged a traceback of twenty lines for each such request (and a UID over 64
    characters added a warning of its own): a caller could fill the log."""
    node = node_factory([], node={"receive_only": True}).start()
    before = len(node.log())
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        mine = f"address=127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(request_bytes)
        assert _closed_by_peer(sock, within=10)
    # This connection's lines only: the start's own probe of the port may be logged late
    # ("connection closed before any request", at DEBUG).
    said = [line for line in node.log()[before:].splitlines() if f"{mine} " in f"{line} "]
    assert len(said) == 1 and "association aborted" in said[0] and told in said[0], said
    assert echoscu(node.port).returncode == 0


def test_padding_that_pynetdicom_takes_is_not_refused(node_factory) -> None:
    """Spaces around an AE title and a NUL after a UID are padding (PS3.8 9.3.2, PS3.5 9.1):
    the association is accepted as pynetdicom would accept it."""
    node = node_factory([], node={"receive_only": True}).start()
    request = _association_request(calling=b" CT01 ", syntax=b"1.2.840.10008.1.2\0")
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(request)
        assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC
        # While it is open: closing it unreleased is a lost connection, which the node logs
        # (a flaky failure when that line came before the log was read).
        assert "association aborted" not in node.log()


@pytest.mark.parametrize(
    ("contexts", "syntaxes", "maximum", "told"),
    [
        (200, 1, 16384, "of 200 presentation contexts (at most 128)"),
        (1, 2000, 16384, "2000 transfer syntaxes"),
        (1, 1, 4, "a maximum length of 4 bytes"),
    ],
    ids=["contexts", "syntaxes", "maximum-length"],
)
def test_an_association_request_naming_more_than_a_caller_needs_is_aborted_in_one_line(
    node_factory, contexts: int, syntaxes: int, maximum: int, told: str
) -> None:
    """pynetdicom decodes and logs each item it names: 16 contexts of ~4,100 bogus transfer
    syntaxes made 264,433 log lines and kept 25 MB in Python's warning registry for good. A
    maximum length too small for any PDV failed with a traceback on every C-ECHO."""
    node = node_factory([], node={"receive_only": True}).start()
    before = len(node.log())
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        syntax = b"1.0.1.2.3.4.5.6.7.8.9" if syntaxes > 1 else b"1.2.840.10008.1.2"
        sock.sendall(_association_request(contexts, syntaxes, syntax, maximum))
        assert _closed_by_peer(sock, within=10)
    said = node.log()[before:]
    assert "association aborted" in said and told in said, said[-2000:]
    assert len(said.splitlines()) < 10
    assert echoscu(node.port).returncode == 0


def test_an_association_request_begun_but_not_finished_holds_its_place_for_acse_timeout_only(
    node_factory,
) -> None:
    """Ten connections each sending the first byte of an A-ASSOCIATE-RQ held every
    association's place for network.network_timeout (60 s), not acse_timeout. (Such a
    connection no longer takes an association's place at all: the listener waits for the
    whole request, `test_connections_that_send_a_byte_of_their_request_and_stop_hold_...`.)"""
    node = node_factory([], node={"receive_only": True}, network={"acse_timeout": 2})
    node.start()
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(b"\x01")
        started = time.monotonic()
        assert _closed_by_peer(sock, within=10)
        assert time.monotonic() - started < 6  # network_timeout is 20 s here
    assert "1 of 6 bytes of its A-ASSOCIATE-RQ within network.acse_timeout=2s" in node.log()


def test_a_data_set_of_countless_sequence_items_is_refused_unread(
    node_factory, tmp_path: Path, ct_series: list[Path]
) -> None:
    """pydicom builds a data set for each item of a sequence of undefined length: 1.5 million
    empty ones (12 MB) took 1.1 GB and 24 s, and were acknowledged."""
    node = _limited_node(node_factory)
    warm_mb = _warm(node, ct_series)
    template = dcmread(ct_series[0])
    body = bytearray()
    for tag, keyword in ((0x00080016, "SOPClassUID"), (0x00080018, "SOPInstanceUID")):
        body += _explicit(tag, b"UI", str(getattr(template, keyword)).encode())
    body += _explicit(0x0020000D, b"UI", generate_uid().encode())
    body += _explicit(0x0020000E, b"UI", generate_uid().encode())
    body += struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)  # ContentSequence
    body += b"\xfe\xff\x00\xe0\x00\x00\x00\x00" * 210_000  # empty items
    body += b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = template.SOPClassUID
    meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = generate_uid()
    path = tmp_path / "items.dcm"
    with path.open("wb") as stream:
        stream.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(stream, meta)  # type: ignore[arg-type]
        stream.write(body)

    status = c_store(node.port, path, as_file_meta_says=True)

    assert status is not None and int(status.Status) != 0
    assert "more than 200000 sequence items (210000)" in node.log()
    _assert_memory_bound(node, warm_mb)
