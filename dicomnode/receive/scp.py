"""The C-STORE, C-ECHO and Storage Commitment SCP: thin pynetdicom handlers that answer.

An instance is answered Success only after its bytes are fsync'd under their final name in the
spool (the directory fsync'd too) and its row is committed; the row's COMMIT and the directory's
fsync run at once, and a row whose file name a power loss took before the answer is removed at
the next start (`db.instances.forget_instances_without_files`). The bytes are stored exactly as
received (no decode/re-encode), so what a PACS later gets from us is what the modality sent.
"""

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from pathlib import Path

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import Settings
from dicomnode.db import Database, ReceivedInstance
from dicomnode.db.failures import database_away, underlying
from dicomnode.db.group_commit import GroupCommit
from dicomnode.db.instances import (
    foreign_copy,
    mark_series_released,
    record_instance,
    stored_path,
)
from dicomnode.db.records import KeptOut, printable_code
from dicomnode.db.refused_copies import remember_refusal
from dicomnode.dicom.association import CONNECTION_TUNING_HANDLER, configure_ae
from dicomnode.dicom.bounded import inflate_prefix, inflated_size
from dicomnode.dicom.tls import server_context
from dicomnode.dicom.wire import part10_header
from dicomnode.errors import (
    DataSetMismatch,
    DecodeError,
    DiskFull,
    InstanceTooLarge,
    SopClassNotSupported,
    SpoolError,
    StoreTimedOut,
    UidCollision,
)
from dicomnode.forward.commitment import record_commitment_report
from dicomnode.observe.counters import (
    ASSOCIATIONS_REJECTED,
    BYTES_RECEIVED,
    INSTANCES_RECEIVED,
    INSTANCES_REFUSED,
)
from dicomnode.observe.throttle import ThrottledWarnings
from dicomnode.receive.commitment import PROCESSING_FAILURE, CommitmentResponder
from dicomnode.receive.guard import COMMAND_ALLOWANCE, ConnectionLimits, GuardedSocket
from dicomnode.receive.listener import start_listener
from dicomnode.receive.status import (
    SUCCESS,
    refusal_reason,
    refusal_text,
    sender_text,
    status_dataset,
    status_for,
)
from dicomnode.receive.store_deadline import DaemonThreads, DatabaseWaits, StoreDeadline
from dicomnode.receive.store_lane import Arrival
from dicomnode.receive.syntaxes import accepted_syntaxes
from dicomnode.spool import Spool, validate_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Identity:
    study_uid: str
    series_uid: str
    sop_instance_uid: str  # the data set's and the command's (`_identify` checks they agree)
    sop_class_uid: str
    modality: str


# What a C-STORE may store: the storage SOP classes (not Verification, not Storage Commitment).
STORAGE_SOP_CLASSES = frozenset(str(c.abstract_syntax) for c in AllStoragePresentationContexts)

_LAST_TAG_NEEDED = 0x0020000E  # SeriesInstanceUID; the identifying tags all come before it
_IDENTIFYING_TAGS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
# Values longer than this are stepped over, never read: the walk reads only the elements'
# headers (the pixels stay raw bytes, as received).
_READ_AT_MOST = 256
# No real instance has this many top-level elements (each tag at most once, in order); a data
# set of millions of tiny elements would cost the walk seconds of CPU per instance.
MAX_TOP_LEVEL_ELEMENTS = 100_000
# Sequence items (and encapsulated fragments) at every depth, told by their tag's bytes before the
# walk: pydicom builds a data set for each item of a sequence of undefined length, and 1.5
# million empty ones (12 MB) took 1.1 GB and 24 s of CPU, then were acknowledged. A
# 5,000-frame enhanced image has ~50,000.
MAX_ITEMS = 200_000
_ITEM_TAG = {True: b"\xfe\xff\x00\xe0", False: b"\xff\xfe\xe0\x00"}  # (FFFE,E000), LE / BE
# A deflated data set's header is read from an inflated prefix of at least this size (never
# pynetdicom's `event.dataset`, which inflates the whole stream in one call), four times larger
# at each try until it holds the identifying elements.
HEADER_PREFIX_BYTES = 1 << 20


def _walk(data: bytes, syntax: UID, *, whole: bool) -> tuple[dict[int, object], bool]:
    """The raw values of the identifying elements, and whether an element after them was
    reached. `whole`: walk every top-level element to the end of `data`, so that a data set
    truncated or encoded otherwise than its transfer syntax says is refused (as a full parse by
    DCMTK's storescp or Orthanc would refuse it) instead of acknowledged and never deliverable.
    """
    items = data.count(_ITEM_TAG[bool(syntax.is_little_endian)])  # at C speed, ~1 GB/s
    if items > MAX_ITEMS:
        raise DecodeError(f"the data set has more than {MAX_ITEMS} sequence items ({items})")
    stream = BytesIO(data)  # shares the bytes, no copy
    elements = data_element_generator(
        stream, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=_READ_AT_MOST
    )
    found: dict[int, object] = {}
    tag, missing, ends = 0, 0, 0
    for count, element in enumerate(elements, 1):
        tag = element.tag
        if tag > _LAST_TAG_NEEDED and not whole:
            return found, True
        if tag in _IDENTIFYING_TAGS:
            found[tag] = element.value
        if count > MAX_TOP_LEVEL_ELEMENTS:
            raise DecodeError(f"the data set has more than {MAX_TOP_LEVEL_ELEMENTS} elements")
        missing, ends = _bytes_missing(element), stream.tell()
    if not whole:
        return found, False
    # A value read whole but short (a small one), or one skipped past the end (a large one).
    missing = max(missing, stream.tell() - len(data))
    last = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if missing > 0:
        raise _truncated(
            syntax,
            f"its last element {last} ends {missing} bytes past the end of the data "
            f"set ({len(data)} bytes)",
        )
    if 0 < len(data) - ends < _ELEMENT_HEADER_BYTES:  # the generator stops there, silently
        after = f"its last element {last}" if ends else "no element"
        raise _truncated(
            syntax,
            f"it ends with {len(data) - ends} bytes after {after}, too few for another "
            "(DCMTK: premature end of stream)",
        )
    return found, False


def _truncated(syntax: UID, how: str) -> DecodeError:
    return DecodeError(f"the data set is truncated or not in {syntax.name}: {how}")


# The shortest element header: tag, VR and a 2-byte length (explicit VR), or tag and a 4-byte
# length (implicit VR).
_ELEMENT_HEADER_BYTES = 8


def _bytes_missing(element: RawDataElement) -> int:
    """How many bytes of its declared length a value read from the stream lacks (the stream
    ended inside it); 0 for one read whole, deferred or of undefined length."""
    if not isinstance(element.value, bytes) or element.length == 0xFFFFFFFF:
        return 0
    return max(0, element.length - len(element.value))


def _identifying_values(arrival: Arrival) -> dict[int, object]:
    """The identifying elements' raw values; DecodeError for a data set whose structure fails."""
    syntax = arrival.transfer_syntax
    if not syntax.is_deflated:
        return _walk(arrival.data_set, syntax, whole=True)[0]
    # Deflated: `_check_size` has inflated the stream to its end, within node.max_instance_mb,
    # which bounds the prefix too.
    size = HEADER_PREFIX_BYTES
    while True:
        prefix = inflate_prefix(arrival.data_set, size)
        if len(prefix) < size:  # the whole data set
            return _walk(prefix, syntax, whole=True)[0]
        try:
            found, passed = _walk(prefix, syntax, whole=False)
        except Exception:  # an element that the prefix cuts short
            passed = False
        if passed:  # an element after the identifying ones
            return found
        size *= 4


def _text(value: object) -> str:
    """An element's raw value as the sender wrote it: the UIDs are validated by `validate_uid`
    below, so pydicom's own conversion and validation is skipped. "" when absent."""
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return "" if value is None else str(value)


def _identify(arrival: Arrival) -> _Identity:
    """The UIDs that file an instance, validated; DecodeError if the dataset cannot give them."""
    try:
        found = _identifying_values(arrival)
    except DecodeError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed bytes
        syntax = arrival.transfer_syntax.name
        raise DecodeError(f"the data set cannot be decoded as {syntax}: {exc}") from exc
    values = {name: _text(found.get(tag)) for tag, name in _IDENTIFYING_TAGS.items()}
    modality = printable_code(values.pop("Modality"))
    try:
        for name, value in values.items():
            if not value:
                raise SpoolError(f"the data set has no {name}")
        uids = {name: validate_uid(value, name) for name, value in values.items()}
        sop_class = validate_uid(arrival.sop_class_uid, "AffectedSOPClassUID")
        affected = validate_uid(arrival.sop_instance_uid, "AffectedSOPInstanceUID")
    except SpoolError as exc:
        raise DecodeError(str(exc)) from None
    # As DCMTK's storescp (and so Orthanc): a data set that is not what its request names is
    # refused, never filed under one identity and sent on under the other.
    if uids["SOPClassUID"] != sop_class:
        raise DataSetMismatch(
            f"the data set's SOPClassUID {uids['SOPClassUID']} is not the request's "
            f"AffectedSOPClassUID {sop_class}"
        )
    if uids["SOPInstanceUID"] != affected:
        raise DataSetMismatch(
            f"the data set's SOPInstanceUID {uids['SOPInstanceUID']} is not the request's "
            f"AffectedSOPInstanceUID {affected}"
        )
    return _Identity(
        uids["StudyInstanceUID"],
        uids["SeriesInstanceUID"],
        uids["SOPInstanceUID"],
        sop_class,
        modality,
    )


def _why_refused(sop_class: str) -> str:
    """Why no context of `sop_class` was accepted: a class the node serves (storage,
    verification, storage commitment) is refused for its transfer syntaxes alone; any other is
    a service the node does not offer (a C-FIND or C-MOVE from a viewer that took the node for
    a PACS)."""
    if sop_class in STORAGE_SOP_CLASSES:
        return "no transfer syntax proposed is one the node can deliver"
    if sop_class in (Verification, StorageCommitmentPushModel):
        return "no transfer syntax proposed is one the node takes"
    return (
        "not a storage SOP class: the node takes C-STORE, C-ECHO and Storage Commitment "
        "only (no query/retrieve: ask the PACS)"
    )


def _check_sop_class(arrival: Arrival) -> None:
    """Refuse a C-STORE of what is not a storage SOP class, or not its context's (0122)."""
    sop_class = arrival.sop_class_uid
    if sop_class != arrival.abstract_syntax:
        raise SopClassNotSupported(
            f"AffectedSOPClassUID {sop_class[:64]} is not the abstract syntax "
            f"{arrival.abstract_syntax} of its presentation context"
        )
    if sop_class not in STORAGE_SOP_CLASSES:
        raise SopClassNotSupported(f"{sop_class[:64]} is not a storage SOP class")


@contextmanager
def _not_idle(assoc: Association) -> Iterator[None]:
    """An association whose caller waits for our answer is not idle: pynetdicom's idle timer
    (network.network_timeout) stands still while we store, or a store that takes longer (a
    database busy for seconds, a large instance on a slow disk) would have the association
    thread abort it under the caller mid-association."""
    timer = getattr(getattr(assoc, "dul", None), "_idle_timer", None)  # pynetdicom's own
    if timer is None:
        yield
        return
    timer.stop()
    try:
        yield
    finally:
        timer.restart()


def _ended_how(assoc: Association) -> str:
    """How an established association ended, as pynetdicom's state machine shows it when the
    connection closes: "released", "idle" (pynetdicom aborted it: network.network_timeout),
    or the peer's doing. Sta13 is "awaiting the transport to close" after A-RELEASE-RP or an
    A-ABORT of ours (PS3.8 9.2): pynetdicom's abort for idleness sets `_sent_abort`, its
    A-RELEASE-RP `_sent_release`; the abort it sends for a PDU out of place (AA-8) neither."""
    if getattr(assoc, "_sent_abort", False):
        return "idle"
    in_sta13 = getattr(assoc.dul.state_machine, "current_state", None) == "Sta13"
    if in_sta13 and getattr(assoc, "_sent_release", False):
        return "released"
    if in_sta13:
        return "aborted: the peer sent a PDU out of place"
    return "aborted by the peer or the connection was lost"


def _answered(event: Event) -> None:
    """A response went out: the caller may send its next message (see receive/guard.py)."""
    sock = event.assoc.dul.socket
    if isinstance(sock, GuardedSocket):
        sock.message_done()


@dataclass
class _Received:
    """What one open association has stored: a count for its closing line, and the series
    that its release (A-RELEASE) marks as sent in full."""

    stored: int = 0
    series: set[str] = field(default_factory=set)
    release_recorded: bool = False


_REFUSED_TOLD_MAX = 1000  # (calling AE, SOP class) pairs remembered; a flood tells no more
_REFUSED_NAMED_PER_LINE = 10  # a caller may propose 128 contexts: the line names this many
ECHO_LOG_SECONDS = 600.0


def _named(uid: str) -> str:
    """A UID with its name where the dictionary knows it: 'CT Image Storage (1.2...)'."""
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


class StorageReceiver:
    """The SCP's handlers, bound to one spool and one database."""

    def __init__(self, settings: Settings, spool: Spool, db: Database) -> None:
        self.settings = settings
        self.spool = spool
        self.db = db
        self._min_free_bytes = settings.node.min_free_disk_mb * 1024 * 1024
        # Per open association, held weakly: an entry a store re-made after the association
        # closed (aborted mid-store) goes with the association, not to a later one.
        self._received: weakref.WeakKeyDictionary[Association, _Received] = (
            weakref.WeakKeyDictionary()
        )
        self._received_lock = threading.Lock()
        self._echoes = ThrottledWarnings(log, interval=ECHO_LOG_SECONDS)
        self._conditions = ThrottledWarnings(log)  # refusals for the node's state, per sender
        # Rejected associations, one line a minute per reason and address: a modality set up
        # with a wrong AE title retries for days, and a caller that floods wrote ~1.7 GB a day.
        self._rejections = ThrottledWarnings(log)
        # Daemon threads: a name's fsync stuck on a hung mount must not keep the process from
        # exiting once its sender was answered (receive/store_deadline.py).
        self._writer = DaemonThreads(settings.node.max_associations, "spool-write")
        # Each store waits for the spool and the database until its deadline, in a thread of
        # its own (receive/store_deadline.py): one per association is all that can be in use.
        self._deadline = StoreDeadline(
            settings.node.max_associations,
            settings.node.store_timeout_seconds,
            describe=lambda exc: refusal_text(underlying(exc)),  # type: ignore[arg-type]
        )
        # SQLite has one writer at a time: rows that arrive together share a transaction
        # (db/group_commit.py). PostgreSQL takes concurrent writers as they come.
        self._record: Callable[..., Path | KeptOut | None] = (
            GroupCommit(db).record if db.is_sqlite else partial(record_instance, db)
        )
        # A release, a commitment request or report: waited for like a store, no longer.
        self._waits = DatabaseWaits(
            settings.node.max_associations, settings.node.store_timeout_seconds
        )
        self.commitment = CommitmentResponder(settings, db, self._waits)
        # The copies of one SOP Instance UID are stored one at a time: two placed and recorded
        # at once into different series could each remove the file the other had just placed.
        self._uid_locks = [threading.Lock() for _ in range(64)]
        # (calling AE, SOP class) whose every proposed context was refused, told once each.
        self._refused_told: set[tuple[str, str]] = set()

    def handlers(self) -> list[tuple]:
        return [
            # Storage Commitment: requests from callers, reports from our destinations.
            (evt.EVT_N_ACTION, self.commitment.handle_action),
            (evt.EVT_DIMSE_SENT, self.commitment.handle_sent),
            (evt.EVT_CONN_CLOSE, self.commitment.forget),
            (evt.EVT_N_EVENT_REPORT, self.handle_report),
            CONNECTION_TUNING_HANDLER,
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_ACSE_SENT, self.handle_association_answer),
            (evt.EVT_ESTABLISHED, self.handle_established),
            (evt.EVT_RELEASED, self.handle_released),
            (evt.EVT_CONN_CLOSE, self.handle_closed),
            (evt.EVT_DIMSE_SENT, _answered),
        ]

    def handle_echo(self, event: Event) -> int:
        """Success; one line per calling AE every ECHO_LOG_SECONDS at most: a monitor that
        echoes every 10 s would otherwise write more lines than all the studies of a day."""
        calling = event.assoc.requestor.ae_title
        self._echoes.log(logging.INFO, calling, "C-ECHO calling_aet=%s", calling)
        return SUCCESS

    def handle_association_answer(self, event: Event) -> None:
        """A log line for an association we reject, with pynetdicom's reason (one a minute per
        reason and address, with how many more there were; the counter counts each)."""
        answer = event.primitive
        if not isinstance(answer, A_ASSOCIATE) or answer.result not in (0x01, 0x02):
            return
        reason = answer.reason_str
        label = "other"
        if answer.result_source == 0x03 and answer.diagnostic == 0x02:
            reason += f" (node.max_associations={self.settings.node.max_associations})"
            label = "too_many_associations"
        elif answer.result_source == 0x01 and answer.diagnostic == 0x03:
            reason = "calling AE title not allowed (node.allowed_calling_aets)"
            label = "calling_aet_not_allowed"
        elif answer.result_source == 0x01 and answer.diagnostic == 0x07:
            reason = f"called AE title is not {self.settings.node.ae_title!r} (node.ae_title)"
            label = "called_aet_unknown"
        ASSOCIATIONS_REJECTED.labels(label).inc()
        self._rejections.warning(
            (reason, event.assoc.requestor.address),
            "association rejected: %s calling_aet=%s called_aet=%s address=%s",
            reason,
            event.assoc.requestor.ae_title,
            getattr(event.assoc.requestor.primitive, "called_ae_title", "-"),
            event.assoc.requestor.address,
        )

    def handle_established(self, event: Event) -> None:
        with self._received_lock:
            self._received.setdefault(event.assoc, _Received())
        self._tell_refused_classes(event.assoc)

    def _tell_refused_classes(self, assoc: Association) -> None:
        """One line per association, once per calling AE and SOP class, for the classes none of
        whose proposed contexts we accepted (a syntax we cannot deliver, a class that is not
        storage): the modality cannot send such instances here, and otherwise would only say
        "aborted". A sender proposing a hundred classes gets one line, not a burst."""
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        refused: dict[str, list[str]] = {}
        for cx in assoc.rejected_contexts:
            if cx.abstract_syntax not in accepted:
                refused.setdefault(cx.abstract_syntax, []).extend(cx.transfer_syntax)
        calling = assoc.requestor.ae_title
        told = []
        for sop_class, syntaxes in refused.items():
            key = (calling, sop_class)
            if key in self._refused_told or len(self._refused_told) > _REFUSED_TOLD_MAX:
                continue
            self._refused_told.add(key)
            if len(self._refused_told) > _REFUSED_TOLD_MAX:  # callers made up, or a flood
                log.warning(
                    "presentation contexts refused to %d calling AE and SOP class pairs: no "
                    "more are told until the node restarts",
                    _REFUSED_TOLD_MAX,
                )
                break
            in_syntaxes = ", ".join(_named(syntax) for syntax in syntaxes) or "-"
            told.append(f"{_named(sop_class)} in {in_syntaxes}: {_why_refused(sop_class)}")
        if told:
            more = len(told) - _REFUSED_NAMED_PER_LINE
            log.warning(
                "presentation context refused: %s%s (told once per calling AE) calling_aet=%s",
                "; ".join(told[:_REFUSED_NAMED_PER_LINE]),
                f"; and {more} more SOP classes" if more > 0 else "",
                calling,
            )

    def handle_closed(self, event: Event) -> None:
        """One line for the end of every association that was established: a warning when it
        ended without A-RELEASE (what it had stored stays; the quiet rule completes its
        series), else, if it stored anything, how much."""
        with self._received_lock:
            received = self._received.pop(event.assoc, None)
        if received is None:  # never established: a rejection has its own line
            return
        assoc = event.assoc
        sock = assoc.dul.socket
        ended_how = _ended_how(assoc)
        guard_refused = isinstance(sock, GuardedSocket) and sock.refused_reason is not None
        if ended_how == "released" and not guard_refused:
            self._record_release(received)
        if ended_how == "released" or guard_refused:  # a guard's abort has its own line
            if received.stored:
                log.info(
                    "association closed calling_aet=%s address=%s stored=%d",
                    assoc.requestor.ae_title,
                    assoc.requestor.address,
                    received.stored,
                )
            return
        timeout = self.settings.network.network_timeout
        log.warning(
            "association aborted address=%s calling_aet=%s reason=%s stored=%d",
            assoc.requestor.address,
            assoc.requestor.ae_title or "-",
            f"idle for network.network_timeout={timeout:g}s" if ended_how == "idle" else ended_how,
            received.stored,
        )

    def handle_released(self, event: Event) -> None:
        """The sender said it is done with the series it stored (A-RELEASE): the completion rule
        may take them after completion.release_quiet_seconds instead of series_quiet_seconds."""
        with self._received_lock:
            received = self._received.get(event.assoc)  # its closing line still follows
        if received is not None:
            self._record_release(received)

    def _record_release(self, received: _Received) -> None:
        """Mark an association's series released, once. pynetdicom fires EVT_RELEASED in the
        association's thread after it sent A-RELEASE-RP, and EVT_CONN_CLOSE in the one that
        reads the socket when the sender then hangs up: on a busy machine the close comes
        first, so the closing handler records the release too (before, such a series waited
        out completion.series_quiet_seconds)."""
        with self._received_lock:
            if received.release_recorded:
                return
            received.release_recorded = True
            series = set(received.series)
        if not series:
            return
        # The quiet rule still completes them: log, never raise in a handler, wait a little.
        try:
            self._waits(partial(mark_series_released, self.db, series))
        except Exception as exc:
            named = ",".join(sorted(series))
            if self._waits.why(exc) is None:
                log.exception("could not record the release of series=%s", named)
                return
            self._waits.tell(
                exc,
                "release",
                "the release of series=%s is not recorded yet (they complete after "
                "completion.series_quiet_seconds at the latest)",
                named,
            )

    def handle_report(self, event: Event) -> tuple[int, Dataset | None]:
        """A Storage Commitment report a destination sends to the listener, filed unless the
        database does not take it within the store timeout: then 0x0110, which asks the
        destination to send it again."""
        try:
            return self._waits(partial(record_commitment_report, self.db, event))
        except Exception as exc:
            calling = event.assoc.requestor.ae_title or "-"
            self._waits.tell(
                exc,
                ("commitment report", calling),
                "storage commitment report not filed, answered 0x0110 calling_aet=%s",
                calling,
            )
            return PROCESSING_FAILURE, None

    def handle_store(self, event: Event) -> Dataset | int:
        """pynetdicom's C-STORE event (a request the store lane left to pynetdicom)."""
        request = event.request
        return self.store(
            Arrival(
                assoc=event.assoc,
                sop_class_uid=str(request.AffectedSOPClassUID or ""),
                sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
                abstract_syntax=str(event.context.abstract_syntax),
                transfer_syntax=event.context.transfer_syntax,
                data_set=request.DataSet.getvalue(),
            )
        )

    def store(self, arrival: Arrival) -> Dataset | int:
        """Spool and record one instance; every failure becomes a status, never an exception."""
        with _not_idle(arrival.assoc):
            return self._store_and_answer(arrival)

    def _store_and_answer(self, arrival: Arrival) -> Dataset | int:
        calling = arrival.assoc.requestor.ae_title
        sop_uid = arrival.sop_instance_uid
        try:
            _check_sop_class(arrival)
            self._check_size(arrival)
            ident = _identify(arrival)
            sop_uid = ident.sop_instance_uid
            self._deadline.run(
                partial(self._store_within_reserve, arrival, ident, calling),
                len(arrival.data_set),
                sop_uid,
            )
        except Exception as raised:
            exc = underlying(raised)  # what failed, not the grouped commit that carried it
            status = status_for(exc)
            reason = refusal_reason(exc)
            INSTANCES_REFUSED.labels(reason).inc()
            self._log_refusal(exc, reason, status, sop_uid, calling)
            return status_dataset(status, sender_text(exc))
        with self._received_lock:
            received = self._received.setdefault(arrival.assoc, _Received())
            received.stored += 1
            received.series.add(ident.series_uid)
        INSTANCES_RECEIVED.inc()
        BYTES_RECEIVED.inc(len(arrival.data_set))
        return SUCCESS

    def _log_refusal(
        self, exc: Exception, reason: str, status: int, sop_uid: str, calling: str
    ) -> None:
        """One line per refused instance; while the node itself cannot store (disk full,
        database away), one per sender a minute: a modality's whole study would otherwise
        write a line per instance, every resend again, into a log on the same full disk."""
        expected = DecodeError | SpoolError | InstanceTooLarge | StoreTimedOut | UidCollision
        level = logging.WARNING if isinstance(exc, expected) else logging.ERROR
        message = "C-STORE failed status=0x%04X sop=%s calling_aet=%s: %s"
        args = (status, sop_uid[:64], calling, refusal_text(exc))
        repeats = DiskFull | StoreTimedOut | UidCollision  # a whole series of them, each resend
        if isinstance(exc, repeats) or database_away(exc) is not None:
            self._conditions.log(level, (reason, calling), message, *args)
        else:  # a bug of ours keeps its traceback; the rest are told in the line
            log.log(level, message, *args, exc_info=reason == "internal")

    def _check_size(self, arrival: Arrival) -> None:
        """Refuse an instance that is, or inflates to, more than node.max_instance_mb."""
        limit_mb = self.settings.node.max_instance_mb
        size = len(arrival.data_set)
        if limit_mb and size > limit_mb * 1024 * 1024:
            raise InstanceTooLarge(
                f"instance of {size / 1048576:.0f} MB exceeds node.max_instance_mb={limit_mb}"
            )
        if arrival.transfer_syntax.is_deflated:
            inflated_size(
                [arrival.data_set], self.settings.node.max_instance_bytes, "deflated instance"
            )

    def _store_within_reserve(self, arrival: Arrival, ident: _Identity, calling: str) -> None:
        """`_store`, unless it would eat into the reserve of free space: what this instance
        takes counts (at 0 bytes free the database cannot even record the deletions that would
        make room)."""
        free = self.spool.free_bytes()
        if free - len(arrival.data_set) < self._min_free_bytes:
            raise DiskFull(
                f"node.min_free_disk_mb={self.settings.node.min_free_disk_mb} MB: storing "
                f"it ({len(arrival.data_set) / 1048576:.1f} MB) would leave less free in "
                f"{self.spool.root} ({free / 1048576:.1f} MB free)"
            )
        self._store(arrival, ident, calling)

    def _store(self, arrival: Arrival, ident: _Identity, calling: str) -> None:
        uid = ident.sop_instance_uid
        with self._uid_locks[hash(uid) % len(self._uid_locks)]:
            self._store_copy(arrival, ident, calling)

    def _store_copy(self, arrival: Arrival, ident: _Identity, calling: str) -> None:
        if self.settings.node.on_duplicate == "keep" and stored_path(
            self.db, ident.sop_instance_uid
        ):
            log.info(
                "duplicate kept (first copy wins) sop=%s series=%s calling_aet=%s",
                ident.sop_instance_uid,
                ident.series_uid,
                calling,
            )
            # Acknowledged, as "keep" promises, but not kept: another sender's copy for another
            # series is another image, which Storage Commitment must not say the node keeps.
            stored = foreign_copy(self.db, ident.sop_instance_uid, ident.series_uid, calling)
            if stored is not None:
                remember_refusal(self.db, ident.sop_instance_uid, ident.series_uid, calling)
            return
        replaces_foreign = self.settings.node.on_duplicate == "replace"
        if not replaces_foreign and not self.spool.holds_series(ident.study_uid, ident.series_uid):
            # A collision in the first copy of a series here is refused before a folder is made
            # for it: one removed after the refusal raced the stores into it.
            stored = foreign_copy(self.db, ident.sop_instance_uid, ident.series_uid, calling)
            if stored is not None:
                raise self._refused(stored, ident, calling)
        header = _file_meta(arrival, ident)
        size = len(header) + len(arrival.data_set)
        # The row is committed once the bytes are durable under their final name, while the
        # name itself is made durable (its directory fsync'd): Success waits for both.
        placed = self.spool.place_instance(
            ident.study_uid, ident.series_uid, ident.sop_instance_uid, header, arrival.data_set
        )
        row = ReceivedInstance(
            sop_instance_uid=ident.sop_instance_uid,
            sop_class_uid=ident.sop_class_uid,
            transfer_syntax_uid=str(arrival.transfer_syntax),
            study_uid=ident.study_uid,
            series_uid=ident.series_uid,
            modality=ident.modality,
            path=placed.path,
            size_bytes=size,
            calling_aet=calling,
            replaces_foreign=replaces_foreign,
        )
        named: list[Future[None]] = []

        def name_while_committing() -> None:
            named.append(self._writer.submit(partial(self.spool.sync_name, placed.path)).future)

        try:
            previous = self._record(row, before_commit=name_while_committing)
        except BaseException:
            wait(named)  # never leave a write running behind a failed transaction
            # refused: the copy acknowledged before this one (which the row still describes)
            # goes back in place
            self.spool.undo(placed)
            raise
        wait(named)
        if isinstance(previous, KeptOut):  # nothing was replaced: the placed file goes
            self.spool.undo(placed)  # its folder stays: the series had one before, but in a race
            raise self._refused(previous, ident, calling)
        self.spool.settle(placed)
        named[0].result()  # a name that could not be made durable: the store fails
        # Another receiver process may have filed a copy under the old name meanwhile.
        if previous is not None and stored_path(self.db, ident.sop_instance_uid) != previous:
            self.spool.remove(previous)
            log.warning(
                "duplicate moved to another series sop=%s series=%s",
                ident.sop_instance_uid,
                ident.series_uid,
            )
        log.debug(
            "stored sop=%s series=%s study=%s calling_aet=%s bytes=%d",
            ident.sop_instance_uid,
            ident.series_uid,
            ident.study_uid,
            calling,
            size,
        )

    def _refused(self, stored: KeptOut, ident: _Identity, calling: str) -> UidCollision:
        """The refusal of a UID collision, remembered first for Storage Commitment (the sender
        must not be told the node keeps the image it refused). The store fails either way: if
        the database does not take the note, the exception says why instead."""
        remember_refusal(self.db, ident.sop_instance_uid, ident.series_uid, calling)
        return _collision(stored, ident.series_uid)


def _collision(stored: KeptOut, series_uid: str) -> UidCollision:
    """The refusal of a copy whose UID another sender filed in another series. Its first 64
    characters are the sender's ErrorComment (another AE title names no patient)."""
    return UidCollision(
        f"UID collision: stored from {stored.calling_aet} in another series "
        f"(series={stored.series_uid}, this copy's series={series_uid}); two senders gave one "
        'UID to different images (node.on_duplicate = "replace" takes every copy)'
    )


def _file_meta(arrival: Arrival, ident: _Identity) -> bytes:
    """What goes before the data set, exactly as received, in the instance's DICOM file
    (PS3.10): the preamble and the file meta pynetdicom's `encoded_dataset` would write."""
    return part10_header(ident.sop_class_uid, ident.sop_instance_uid, str(arrival.transfer_syntax))


def start_receiver(
    settings: Settings,
    spool: Spool,
    db: Database,
    *,
    shared_port: bool = False,
    quiet: bool = False,
) -> ThreadedAssociationServer:
    """Start listening (non-blocking); every storage SOP class, every transfer syntax.

    Over TLS when node.tls_certificate is set; a bad TLS file raises ConfigError before listening.
    `shared_port`: one of several listener processes on node.port (receive/processes.py);
    `quiet`: such a process leaves the start-up lines to the node's own listener.
    """
    node = settings.node
    tls_context = server_context(node)
    ae = configure_ae(node.ae_title, settings.network, node.max_pdu_size)
    ae.maximum_associations = node.max_associations
    # PS3.8 9.3.2 / 7.1.1.2: a caller addressing another AE title gets A-ASSOCIATE-RJ
    # (source: service user, reason: called AE title not recognised).
    ae.require_called_aet = node.require_called_aet
    if node.allowed_calling_aets:
        ae.require_calling_aet = list(node.allowed_calling_aets)
    elif not quiet:
        log.warning("node.allowed_calling_aets is empty: accepting stores from any calling AE")
    syntaxes = accepted_syntaxes(node.extra_transfer_syntaxes)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, syntaxes)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    # Either role: a caller asks us (we are SCP), a destination reports to us (it is SCP).
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    receiver = StorageReceiver(settings, spool, db)
    server = start_listener(
        ae,
        (node.host, node.port),
        tls_context,
        settings.network.acse_timeout,
        receiver.handlers(),
        limits=ConnectionLimits(
            max_pdu_bytes=node.max_pdu_size,
            budget_bytes=node.max_instance_bytes + COMMAND_ALLOWANCE if node.max_instance_mb else 0,
            pdu_seconds=settings.network.network_timeout,
            request_seconds=settings.network.acse_timeout,
        ),
        keepalive_seconds=settings.network.tcp_keepalive_seconds,
        max_per_address=node.max_associations_per_address,
        shared_port=shared_port,
        store=receiver.store,
    )
    if quiet:
        return server
    if tls_context is None:
        transport = "tcp"
    else:
        transport = "tls+client-certificate" if node.tls_require_client_certificate else "tls"
    log.info(
        "listening ae_title=%s host=%s port=%d transport=%s",
        node.ae_title,
        node.host,
        node.port,
        transport,
    )
    return server
