"""Each PDU read whole, within limits of bytes and time, before pynetdicom sees it.

pynetdicom reads a PDU by the length its header announces (up to 4 GiB, whatever maximum we
advertised) with a blocking `recv` whose timeout restarts with every byte, and it queues P-DATA
without limit until a message is complete. A peer that announces a long PDU and drips it holds
the association, and the thread that waits for it, for as long as it likes; one that sends
fragments without end fills memory. That holds for a caller (`receive/guard.py`) and for a
destination we send to alike (`forward/associate.py`): the socket of either reads each PDU here
and refuses, when

* a P-DATA-TF is longer than the maximum length we advertised (PS3.8 D.3.3.1), or another PDU
  longer than `OTHER_PDU_LIMIT`;
* the P-DATA of one message passes the byte budget (when a message ends is the socket's kind's
  to say: `message_done`);
* one PDU takes longer than its time limit from its first byte to its last;
* a message, once it has taken that long, has come slower than `MIN_BYTES_PER_SECOND` on
  average from its first P-DATA on, looked at as each PDU comes and while the rest of the
  message is awaited: a caller that sends a small PDU now and then, each well within the
  limits above, would otherwise hold its association's place for as long as it likes (a
  "slowloris").

A refused PDU reads as a closed connection to pynetdicom (an event it handles without a
traceback), after the subclass has said why (`refused`: a log line, an A-ABORT). So does a PDU
the peer stopped sending halfway by closing the connection: that is a lost connection (a
modality switched off, a killed sender), not a malformed PDU.
"""

import contextlib
import select
import socket
import ssl
import time
from dataclasses import dataclass

from pynetdicom.association import Association
from pynetdicom.pdu import A_ABORT_RQ

from dicomnode.dicom.release import abort_sent
from dicomnode.dicom.waking import WakingSocket
from dicomnode.dicom.wire import (
    P_DATA_TF,
    PDU_HEADER,
    TooManyFragments,
    messages_ended,
    pdv_problem,
)

OTHER_PDU_LIMIT = 1 << 20  # an A-ASSOCIATE-RQ with 128 contexts is ~50 KB
_SERVICE_USER, _SERVICE_PROVIDER = 0x00, 0x02  # an A-ABORT's source (PS3.8 9.3.8)
_INVALID_PARAMETER_VALUE = 0x06  # PS3.8 9.3.8, source 0x02 (service provider)
# The slowest a message may come once it has taken the PDU time limit (Apache's
# mod_reqtimeout takes the same floor for a request body): a modality on a 64 kbit/s line
# sends 16 times as fast.
MIN_BYTES_PER_SECOND = 500
# How long one wait for bytes lasts at most, so that an association ended meanwhile (our
# abort, the node stopping) does not wait for the rest of a dripped PDU.
_SLICE_SECONDS = 0.5


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one connection (0: none for the byte limits)."""

    max_pdu_bytes: int
    budget_bytes: int
    pdu_seconds: float
    # The first PDU whole within this (network.acse_timeout; 0: pdu_seconds): a caller that
    # sends one byte of its A-ASSOCIATE-RQ held an association's place for network_timeout.
    request_seconds: float = 0.0
    budget_setting: str = "node.max_instance_mb"  # what sets budget_bytes, for the reason


class Refused(Exception):
    """One limit broken: the message is the reason that goes to the log, `kind` the metric's."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def refused_reason(assoc: Association) -> str | None:
    """Why `assoc`'s socket aborted it for a broken limit; None when it did not."""
    return getattr(assoc.dul.socket, "refused_reason", None)


class BoundedSocket(WakingSocket):
    """pynetdicom's socket, reading each PDU whole within the connection's limits."""

    limits: ConnectionLimits
    refused_reason: str | None
    _header: bytearray | None
    _body: bytearray | None
    _in_flight: int
    # The pace of the peer's message on the wire: when its first P-DATA came (monotonic) and
    # how many bytes its P-DATA announced since. Kept apart from the budget, which a caller's
    # message spends until we answer it: a message we never answer (the N-EVENT-REPORT-RSP to
    # our Storage Commitment report) must not run the next one's clock.
    _pace_started: float | None
    _pace_bytes: int
    # The command set of the peer's message so far (PS3.7 6.3.1: Implicit VR Little Endian):
    # whether a data set follows it decides where the message ends (`messages_ended`).
    _command: bytearray
    _rest_owed: bool  # the peer's last P-DATA left its message unfinished
    _first_read: bool  # the first PDU was read

    def bound(self, limits: ConnectionLimits) -> None:
        """Read within `limits` from now on (before the DUL thread starts)."""
        self.limits = limits
        self.refused_reason = None
        self._header = None
        self._body = None
        self._in_flight = 0
        self._pace_started = None
        self._pace_bytes = 0
        self._command = bytearray()
        self._rest_owed = False
        self._first_read = False
        self.install_wakeup()

    def message_ended(self) -> None:
        """The peer's message ended on the wire, where pynetdicom's decoder ends it (a
        subclass's: the requestor's budget restarts here, a caller's once we answered)."""

    def message_done(self) -> None:
        """The message the P-DATA since the last call belonged to is over: it no longer
        counts against the budget (its pace is the wire's to end: `messages_ended`)."""
        self._in_flight = 0

    @property
    def ready(self) -> bool:
        """A PDU is there for pynetdicom: read here whole (one `taken` by the socket's kind
        itself is not; it restarts the idle timer, as a PDU pynetdicom reads does)."""
        while self._header is None:
            if not super().ready:
                self._check_pace_while_waiting()
                return False
            self._header, self._body = self._read_guarded()
            if self.taken():
                self._header = self._body = None
                self.assoc.dul._idle_timer.restart()
        return True

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom asks for a PDU header (6 bytes), then for its body: both read whole."""
        if self._header is None and self._body is None:
            self._header, self._body = self._read_guarded()
        if self._header is not None:
            header, self._header = self._header, None
            return header
        body, self._body = self._body, None
        return body if body is not None else bytearray()

    def taken(self) -> bool:
        """Whether the PDU just read (`_header`, `_body`) was dealt with here, not by
        pynetdicom (a subclass's)."""
        return False

    def checked(self, pdu_type: int, body: bytearray) -> None:
        """Raise Refused for a PDU read whole that must not reach pynetdicom (a subclass's)."""

    def refused(self, error: Refused) -> None:
        """A limit was broken: say so (a subclass's), then `abort_and_close`."""
        self.refused_reason = str(error)
        self.abort_and_close()

    def abort_and_close(
        self, source: int = _SERVICE_PROVIDER, reason: int = _INVALID_PARAMETER_VALUE
    ) -> None:
        """Tell the peer (A-ABORT, best effort) and close the connection."""
        if self.socket is None:
            return
        abort = A_ABORT_RQ()
        abort.source = source
        abort.reason_diagnostic = reason
        # Between two PDUs of a sender on another thread, never inside one; a sender that
        # has not finished its PDU within a second gets the connection closed under it.
        if self.sending.acquire(timeout=1.0):
            try:
                with contextlib.suppress(OSError):
                    self.socket.settimeout(1.0)  # a peer that does not read must not hold us
                    self.socket.sendall(abort.encode())
            finally:
                self.sending.release()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)

    def _read_guarded(self) -> tuple[bytearray, bytearray | None]:
        """The next PDU, or an empty header (pynetdicom: connection closed, Evt17, no traceback)
        when the peer closed or reset it, or broke a limit (`refused`; what it sent after
        is not read)."""
        if self.refused_reason is not None:
            return bytearray(), None
        try:
            return self._read_pdu()
        except Refused as exc:
            self.refused(exc)
        except OSError:
            pass
        return bytearray(), None

    def _read_pdu(self) -> tuple[bytearray, bytearray]:
        seconds, setting = self.limits.pdu_seconds, "network.network_timeout"
        if not self._first_read and 0 < self.limits.request_seconds < seconds:
            seconds, setting = self.limits.request_seconds, "network.acse_timeout"
        self._first_read = True
        deadline = time.monotonic() + seconds
        within = f"{setting}={seconds:g}s"
        header = self._read_exactly(6, deadline, within)
        if len(header) < 6:
            return self._connection_lost()
        pdu_type, _, length = PDU_HEADER.unpack(header)
        if pdu_type == P_DATA_TF:
            if self.limits.max_pdu_bytes and length > self.limits.max_pdu_bytes:
                raise Refused(
                    f"P-DATA-TF of {length} bytes, more than the maximum length "
                    f"{self.limits.max_pdu_bytes} we accepted (node.max_pdu_size, PS3.8 D.3.3.1)",
                    "pdu_too_large",
                )
            self._in_flight += length
            if self.limits.budget_bytes and self._in_flight > self.limits.budget_bytes:
                raise Refused(
                    f"more than {self.limits.budget_bytes} bytes of P-DATA for one message "
                    f"({self.limits.budget_setting})",
                    "message_too_large",
                )
            if not self._rest_owed:  # a message begins: its pace counts from here
                self._pace_started, self._pace_bytes = time.monotonic(), length
            else:
                self._pace_bytes += length
                self._check_pace(length)
        elif length > OTHER_PDU_LIMIT:
            raise Refused(f"PDU type 0x{pdu_type:02X} of {length} bytes", "pdu_too_large")
        body = self._read_exactly(length, deadline, within)
        if len(body) < length:  # the peer closed or reset mid-PDU, or the association ended:
            return self._connection_lost()  # a lost connection, not a malformed PDU
        if pdu_type == P_DATA_TF:
            try:
                problem = pdv_problem(body)
            except TooManyFragments as exc:
                raise Refused(str(exc), "protocol") from None
            if problem is not None:
                raise Refused(f"a P-DATA-TF whose {problem}", "protocol")
            ended, self._command = messages_ended(self._command, body)
            self._rest_owed = not ended or bool(self._command)  # or the next one began
            if ended:
                self.message_ended()
        self.checked(pdu_type, body)
        return header, body

    def _connection_lost(self) -> tuple[bytearray, bytearray]:
        """What pynetdicom reads as a closed connection (Evt17), its wait for the rest of a
        message over. When the read ended because the association was aborted here (a sender's
        abort, the node stopping), pynetdicom's own A-ABORT waits behind this read and would
        never go out: it is sent here."""
        self._rest_owed, self._pace_started = False, None
        if abort_sent(self.assoc) or self.assoc._kill:
            self.abort_and_close(_SERVICE_USER, 0x00)
        return bytearray(), bytearray()

    def _check_pace(self, arriving: int = 0) -> None:
        """Refused when the message in flight has taken longer than the PDU time limit and
        come slower than MIN_BYTES_PER_SECOND. `arriving`: the length of the P-DATA-TF whose
        header was just read, which counts (a long one is read, or stalls, within its own
        limit) but is not yet there to name."""
        started = self._pace_started
        if started is None:
            return
        elapsed = time.monotonic() - started
        if elapsed > self.limits.pdu_seconds and self._pace_bytes < MIN_BYTES_PER_SECOND * elapsed:
            raise Refused(
                f"a message of {self._pace_bytes - arriving} bytes in {elapsed:.0f} s, slower "
                f"than {MIN_BYTES_PER_SECOND} bytes/s once it took longer than "
                f"network.network_timeout={self.limits.pdu_seconds:g}s",
                "stalled",
            )

    def _check_pace_while_waiting(self) -> None:
        """The pace rule between two PDUs as well, looked at as pynetdicom waits for the next:
        checked only as a fragment came, a caller that sends one just within the idle timer
        held its place for up to twice network_timeout."""
        if self.refused_reason is not None or not self._rest_owed:
            return  # whole: the time until we answer is ours, not the peer's
        try:
            self._check_pace()
        except Refused as exc:
            self.refused(exc)

    def _read_exactly(self, size: int, deadline: float, within: str) -> bytearray:
        """`size` bytes, fewer if the peer closes or the association is ended meanwhile (our
        abort, the node stopping: looked at every `_SLICE_SECONDS`); Refused past the deadline
        (`within` names the setting that set it). Waits with `select`, not the socket's
        timeout, which a sender on another thread (forward/send_lane.py) writes under."""
        sock = self.socket
        assert sock is not None
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stalled = f"stalled: {got} of {size} bytes of a PDU in {within}"
                raise Refused(stalled, "stalled")
            if abort_sent(self.assoc) or self.assoc._kill:  # the rest is not wanted
                break
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if not pending and not select.select([sock], [], [], min(remaining, _SLICE_SECONDS))[0]:
                continue
            try:
                count = sock.recv_into(view[got:], min(size - got, 1 << 20))
            except (TimeoutError, ssl.SSLWantReadError):  # part of a TLS record: wait on
                continue
            if not count:
                break
            got += count
        if got < size:
            del view
            return buffer[:got]
        return buffer
