"""An association the node requests gets all of its tuning (dicom/association.py), for real,
numbers its requests and never waits for ever on a peer that stops reading, whether pynetdicom
sends (over TLS) or the send lane (forward/send_lane.py).

pynetdicom runs the tuning as an EVT_CONN_OPEN handler and only logs an exception raised there,
so a tuning that breaks is silent: the association works, slower or racier. Checked here on an
association to DCMTK `storescp`, as the forwarder opens it.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage

from dicomnode.config import Destination, NetworkSettings, Settings
from dicomnode.db.records import SpooledInstance
from dicomnode.dicom.association import DUL_LOOP_DELAY_SECONDS
from dicomnode.dicom.waking import WakingSocket
from dicomnode.errors import ForwardError
from dicomnode.forward import send_lane
from dicomnode.forward.associate import open_association
from dicomnode.forward.scu import send_series
from tests.support.dcmtk import StoreScp
from tests.support.faulty_scp import FaultyScp
from tests.support.series import write_ct_series


def test_an_outgoing_association_is_tuned_and_its_responses_left_to_their_sender(
    tmp_path: Path,
) -> None:
    with StoreScp(tmp_path / "pacs") as pacs:
        destination = Destination("pacs", "STORESCP", "127.0.0.1", pacs.port)
        assoc = open_association(
            destination, Settings(), [build_context(CTImageStorage)], "pacs", None
        )
        try:
            dul = assoc.dul
            sock = dul.socket.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert dul._run_loop_delay == DUL_LOOP_DELAY_SECONDS
            assert isinstance(dul.socket, WakingSocket)  # asleep until there is something to do
            # pynetdicom's own get_msg is a bound method of the provider; ours is not
            assert getattr(assoc.dimse.get_msg, "__self__", None) is not assoc.dimse
            assert assoc.dimse.get_msg.__qualname__.startswith("share_the_queue")
            assert type(assoc).__name__ == "_PauseOwnedByReactor"
            assert isinstance(assoc.dimse, DIMSEServiceProvider)
        finally:
            assoc.release()


def test_each_request_of_an_association_has_its_own_message_id(tmp_path: Path) -> None:
    series = write_ct_series(tmp_path / "series", 5, size=32)
    items = [
        SpooledInstance(ds.SOPInstanceUID, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, path)
        for path in series
        for ds in [dcmread(path, stop_before_pixels=True)]
    ]
    scp = FaultyScp().start()
    try:
        destination = Destination("pacs", scp.ae_title, "127.0.0.1", scp.port)
        assert send_series(1, destination, items, Settings()).sent == 5
        send_series(2, destination, items[:2], Settings())  # a new association starts again
    finally:
        scp.stop()
    assert scp.message_ids == [1, 2, 3, 4, 5, 1, 2]


def _unanswered(sender: str, assoc: Association, path: Path) -> bool:
    """Send `path` as the forwarder would (`sender`); True when no answer came, as the
    forwarder sees it (pynetdicom's empty response, the lane's transient ForwardError)."""
    if sender == "pynetdicom":
        return "Status" not in assoc.send_c_store(path)
    ds = dcmread(path, stop_before_pixels=True)
    item = SpooledInstance(ds.SOPInstanceUID, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, path)
    assert send_lane.usable(assoc)
    try:
        send_lane.send_file(assoc, assoc.accepted_contexts[0].context_id, item, 1)
    except ForwardError as exc:
        return exc.transient and item.sop_instance_uid in str(exc)
    return False


@pytest.mark.parametrize("sender", ["pynetdicom", "lane"])
def test_a_peer_that_stops_reading_ends_the_send_after_the_network_timeout(
    tmp_path: Path, sender: str
) -> None:
    # 32 MiB of pixels: more than loopback's socket buffers can take while nobody reads.
    [path] = write_ct_series(tmp_path / "series", 1, size=4096)
    # The answer's wait (dimse_timeout) far longer: once the write gave up, no answer can come.
    settings = Settings(network=NetworkSettings(dimse_timeout=120, network_timeout=2))
    with StoreScp(tmp_path / "pacs") as pacs:
        destination = Destination("pacs", "STORESCP", "127.0.0.1", pacs.port)
        context = build_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = open_association(destination, settings, [context], "pacs", None)
        os.kill(pacs.pid, signal.SIGSTOP)  # its application hangs; its kernel still answers
        unanswered: list[bool] = []
        thread = threading.Thread(
            target=lambda: unanswered.append(_unanswered(sender, assoc, path))
        )
        thread.start()
        thread.join(timeout=40)  # 2 s to give up the write, far from the 120 s of dimse_timeout
        hung = thread.is_alive()
        os.kill(pacs.pid, signal.SIGCONT)
        thread.join(timeout=60)

    assert not hung, "the send waited for an answer from a peer that stopped reading"
    assert unanswered == [True]  # no response: the forwarder retries
    assert assoc.is_aborted


# Run in a process of its own, whose peak memory is this send's alone (VmHWM, which an exec
# resets, unlike ru_maxrss): prints the status, and the peak (KiB) with the association open and
# after the C-STORE of the file in argv[1] to the port in argv[2], sent by pynetdicom (as over
# TLS) or by the send lane (argv[3]).
SEND_AND_MEASURE = """
import re, sys
from pathlib import Path
from pydicom import dcmread
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage
from dicomnode.config import Destination, Settings
from dicomnode.db.records import SpooledInstance
from dicomnode.forward import scu, send_lane  # scu: sends spooled files as they are, in chunks
from dicomnode.forward.associate import open_association

def peak():
    return re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)

path = Path(sys.argv[1])
ds = dcmread(path, stop_before_pixels=True)
item = SpooledInstance(ds.SOPInstanceUID, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, path)
destination = Destination("pacs", "STORESCP", "127.0.0.1", int(sys.argv[2]))
context = build_context(CTImageStorage, item.transfer_syntax_uid)
assoc = open_association(destination, Settings(), [context], "pacs", None)
before = peak()
if sys.argv[3] == "lane":
    assert send_lane.usable(assoc)
    status = send_lane.send_file(assoc, assoc.accepted_contexts[0].context_id, item, 1)
else:
    status = assoc.send_c_store(path).Status
after = peak()
assoc.release()
print(status, before, after)
"""


@pytest.mark.parametrize("sender", ["pynetdicom", "lane"])
def test_a_large_instance_is_forwarded_from_its_file_never_held_whole(
    tmp_path: Path, sender: str
) -> None:
    [path] = write_ct_series(tmp_path / "series", 1, size=8192)  # 128 MiB of pixels
    size_mib = path.stat().st_size / 2**20
    with StoreScp(tmp_path / "pacs") as pacs:
        sent = subprocess.run(
            [sys.executable, "-c", SEND_AND_MEASURE, str(path), str(pacs.port), sender],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    status, before, after = map(int, sent.stdout.split())
    [received] = [item for item in (tmp_path / "pacs").iterdir() if item.is_file()]

    assert status == 0
    assert dcmread(received).PixelData == dcmread(path).PixelData  # all of it arrived
    grown_mib = (after - before) / 1024
    assert grown_mib < size_mib / 4, f"peak memory grew {grown_mib:.0f} MiB for {size_mib:.0f}"
