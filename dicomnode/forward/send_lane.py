"""A spooled file's C-STORE request, written onto the wire by the thread that forwards it.

pynetdicom sends a file through its DIMSE and DUL layers: the command set encoded by pydicom,
the file read a fragment at a time, each fragment a P-DATA primitive handed to the DUL thread,
which builds a PDU object of it, encodes it and writes it. With the 16 KiB PDUs that Orthanc and
DCMTK announce, a 512x512 CT instance is 34 such hand-offs: ~4.3 ms of this process's CPU per
instance, where the lane takes ~1.6 (Orthanc on loopback, 150 instances; `storescu` to the same
Orthanc ~7 ms per instance in all, pynetdicom ~10, the lane ~7.5). A node forwards a series'
originals while the enhancement of the same series already runs beside them, and the derived
series right after it: both wait on those milliseconds, under one interpreter lock.

So here the command set and the PDUs are written with `struct` (`dicom/wire.py`, pinned byte
for byte to pynetdicom's), the data set read from the file in blocks of at most BATCH_BYTES and
written as whole PDUs under the transport's send lock (an abort queued meanwhile goes between
two PDUs, never inside one), all within the association's turn (`dicom/reactor.py`: no other
message's fragments in between). The answer is still pynetdicom's: the DUL thread reads and
decodes it, and the sender waits for it on the DIMSE queue with the reactor paused, as
pynetdicom's own `send_c_store` does.

Plain TCP only: with TLS our writes and the DUL thread's reads would use one SSL connection
from two threads at once, which OpenSSL does not support; there pynetdicom sends (`usable`).
"""

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from dicomnode.db import SpooledInstance
from dicomnode.dicom import reactor
from dicomnode.dicom.bounded_socket import refused_reason
from dicomnode.dicom.waking import WakingSocket
from dicomnode.dicom.wire import PDU_OVERHEAD, c_store_request, command_pdus, data_set_pdu
from dicomnode.errors import BrokenOff, ForwardError
from dicomnode.forward.outcome import no_response

# The most of a data set read and written in one go: the memory a send holds, whatever the
# file's size, and how long the DUL thread may wait to write an abort of its own.
BATCH_BYTES = 256 * 1024

# How often a sender looks whether the reactor has paused (as pynetdicom's own sends do).
_PAUSE_POLL_SECONDS = 0.0001


def usable(assoc: Association) -> bool:
    """True when `assoc` is an association we requested over plain TCP, tuned by
    `dicom/reactor.py` (its turn) and `dicom/waking.py` (its send lock)."""
    transport = assoc.dul.socket
    return (
        isinstance(transport, WakingSocket)
        and transport.socket is not None
        and not isinstance(transport.socket, ssl.SSLSocket)
        and reactor.turn_of(assoc) is not None
        and isinstance(getattr(assoc, "_reactor_checkpoint", None), threading.Event)
    )


def send_file(assoc: Association, context_id: int, item: SpooledInstance, message_id: int) -> int:
    """Send `item`'s file as it is on presentation context `context_id` and return the status
    the peer answered (whatever Message ID its response names, as pynetdicom takes it). `assoc`
    must be `usable`.

    OSError or InvalidDicomError when the file cannot be read or is not the instance its row
    names; if that happens after its first bytes went out, the association is aborted first
    (half a message cannot be taken back). ForwardError, transient, when the connection fails
    or the peer's answer does not come (`network.dimse_timeout`) or is no C-STORE response;
    the association is aborted then too.
    """
    turn = reactor.turn_of(assoc)
    if turn is None:
        raise ValueError("send_file needs an association that usable() accepts")
    with open(item.path, "rb") as file:
        length = _data_set_length(file, item)
        command = c_store_request(message_id, item.sop_class_uid, item.sop_instance_uid)
        # Paused first, then the turn, as pynetdicom's own sends do: the reactor may need the
        # turn to answer what the peer sent before it reaches its checkpoint.
        with _reactor_paused(assoc, item), turn:
            if not assoc.is_established:
                raise ForwardError(
                    f"the association ended before sop={item.sop_instance_uid} was sent",
                    transient=True,
                )
            _write(assoc, context_id, command, file, length, item)
            asked = time.monotonic()
            _context, answer = assoc.dimse.get_msg(block=True)
            waited = time.monotonic() - asked
    timeout = assoc.dimse.dimse_timeout
    return _status(assoc, answer, item, timed_out=timeout is not None and waited >= timeout)


def _data_set_length(file: BinaryIO, item: SpooledInstance) -> int:
    """Read the file's preamble and File Meta Information, leave `file` at its data set and
    return the data set's length. InvalidDicomError when it is no DICOM file, or not the
    instance, class and transfer syntax its row says (what the request and its context
    announce): the forwarder reports it as a spooled file it cannot read (and retries: the
    spool may be put right meanwhile)."""
    read_preamble(file, False)
    meta = read_dataset(file, False, True, stop_when=lambda tag, _vr, _length: tag.group != 2)
    start = file.tell()
    for keyword, expected in (
        ("MediaStorageSOPInstanceUID", item.sop_instance_uid),
        ("MediaStorageSOPClassUID", item.sop_class_uid),
        ("TransferSyntaxUID", item.transfer_syntax_uid),
    ):
        found = str(meta.get(keyword, "") or "")
        if found != expected:
            raise InvalidDicomError(
                f"it is not that instance: its {keyword} is {found or '(missing)'!r}, its row "
                f"says {expected!r}; not sent"
            )
    return file.seek(0, 2) - file.seek(start)


@contextlib.contextmanager
def _reactor_paused(assoc: Association, item: SpooledInstance) -> Iterator[None]:
    """The association's reactor held at its checkpoint, as pynetdicom's sends hold it, so that
    the answer is left on the queue for the sender (`reactor.share_the_queue`). A reactor that
    does not get there within `dimse_timeout` (pynetdicom waits without a bound) aborts the
    association: ForwardError, transient."""
    checkpoint: threading.Event = assoc._reactor_checkpoint
    timeout = assoc.dimse.dimse_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    checkpoint.clear()
    try:
        while not assoc._is_paused:  # a killed reactor reads as paused (reactor.py)
            if deadline is not None and time.monotonic() > deadline:
                assoc.abort()
                raise ForwardError(
                    f"the association's reactor did not pause within {timeout:g} s "
                    f"(network.dimse_timeout) to send sop={item.sop_instance_uid}; aborted",
                    transient=True,
                )
            time.sleep(_PAUSE_POLL_SECONDS)
        yield
    finally:
        checkpoint.set()


def _write(
    assoc: Association,
    context_id: int,
    command: bytes,
    file: BinaryIO,
    length: int,
    item: SpooledInstance,
) -> None:
    """The request's PDUs onto the wire, a batch at a time. Whatever breaks the message off
    after its first bytes aborts the association (half a message cannot be taken back): a file
    that fails or ends early (OSError), a connection that fails, closes (the peer aborted) or
    whose peer stops reading for `network.network_timeout` (ForwardError, transient)."""
    transport = assoc.dul.socket
    if not isinstance(transport, WakingSocket):
        raise ValueError("send_file needs an association that usable() accepts")
    limit = assoc.dimse.maximum_pdu_size or reactor.FRAGMENT_BYTES  # 0: the peer sets none
    room = max(limit - PDU_OVERHEAD, 1)
    per_batch = max(room, BATCH_BYTES // room * room)
    batch = bytearray().join(command_pdus(context_id, command, limit))
    left = length
    while True:
        want = min(left, per_batch)
        try:
            block = file.read(want)
            if len(block) != want:
                raise OSError(f"the file ended {left - len(block)} bytes early")
        except OSError:
            if left < length:
                assoc.abort()
            raise
        left -= want
        view = memoryview(block)
        for start in range(0, max(want, 1), room):  # an empty data set: one empty fragment
            last = not left and start + room >= want
            batch += data_set_pdu(context_id, view[start : start + room], last)
        try:
            with transport.sending:
                connection = transport.socket  # None once the DUL thread closed it
                if connection is None:
                    raise ConnectionAbortedError("the connection was closed")
                connection.sendall(batch)
        except OSError as exc:
            assoc.abort()
            raise BrokenOff(
                f"the connection failed while sop={item.sop_instance_uid} was sent: {exc} "
                "(association aborted)"
            ) from None
        if not left:
            return
        batch = bytearray()


def _status(assoc: Association, answer: object, item: SpooledInstance, *, timed_out: bool) -> int:
    """The Status of a valid C-STORE-RSP; else the association is aborted and ForwardError
    (transient: another attempt, on a new association, may well be answered); BrokenOff when
    the answer did not come because the peer ended the association before network.dimse_timeout
    (pynetdicom wakes the wait then, before it marks the association ended)."""
    if answer is None:
        if assoc.is_established:
            assoc.abort()
        raise no_response(
            item.sop_instance_uid,
            assoc.dimse_timeout,
            timed_out=timed_out,
            refused=refused_reason(assoc),
        )
    if not isinstance(answer, C_STORE) or not answer.is_valid_response or answer.Status is None:
        assoc.abort()
        raise ForwardError(
            f"the peer's answer to the C-STORE of sop={item.sop_instance_uid} was not a "
            f"C-STORE response ({type(answer).__name__}); association aborted",
            transient=True,
        )
    return int(answer.Status)
