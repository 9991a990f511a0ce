"""Storage Commitment as SCP (PS3.4 J.3): tell a caller which of its instances the node keeps.

An instance is committed when it has its row in the database and its file in the spool under
the SOP Class the caller names: exactly what the node promised when it answered the C-STORE
with Success (both are durable before that answer, and survive a crash). Anything else fails
with reason 0x0112 (no such object instance) or 0x0119 (class/instance conflict). So does a UID
whose copy from some sender was refused as a UID collision, unless the caller is the sender of
the copy the node keeps (`db/refused_copies.py`): the refused image is not here, and its sender
must not delete it. Which sender a caller is, is known by its AE title alone: a modality that
asks for commitment under another AE title than it stores with is not told the node keeps such
a UID either (the safe side: it keeps its copy).

The N-ACTION is answered at once; the report follows (PS3.4 J.3.3) on the same association
when the caller keeps it open, else over a new association to the address `[[peers]]` gives
for the caller's AE title. A caller not listed there is refused (0x0124), with a log line: its
report could not reach it once it releases the association.
"""

import logging
import threading
import time
from functools import partial
from weakref import WeakKeyDictionary

from pydicom import Dataset
from pynetdicom import build_context, build_role
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.events import Event

from dicomnode.config import Peer, Settings
from dicomnode.db import Database
from dicomnode.db.commitments import kept_copies
from dicomnode.dicom.association import (
    CONNECTION_TUNING_HANDLER,
    bounded_waits_handler,
)
from dicomnode.dicom.bounded_socket import refused_reason
from dicomnode.dicom.commitment import (
    CLASS_INSTANCE_CONFLICT,
    COMMITMENT_CLASS_UID,
    COMMITMENT_INSTANCE_UID,
    NO_SUCH_OBJECT_INSTANCE,
    REQUEST_ACTION_TYPE,
    CommitmentReport,
    CommitmentRequest,
    Failure,
    read_request,
    report_dataset,
)
from dicomnode.dicom.reactor import once_queued
from dicomnode.dicom.requestor import requestor_ae
from dicomnode.observe.throttle import ThrottledWarnings
from dicomnode.receive.status import SUCCESS, status_dataset
from dicomnode.receive.store_deadline import DatabaseWaits

log = logging.getLogger(__name__)
# A modality that asks again and again for the same refused copies: a line a minute per caller.
_not_confirmed = ThrottledWarnings(log)

PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION = 0x0123  # PS3.7 C.5.x: an Action Type ID other than 1
NOT_AUTHORISED = 0x0124  # a caller with no [[peers]] entry
# What a request waits for: its instances' rows, then their files (a hung spool mount as much
# as a frozen database server).
WAITED_FOR = "the database or the spool"
# The ErrorComment of a request they did not answer in time (the log says more; LO: 64 chars).
UNANSWERED = "the database or spool did not answer in time; ask again later"
REPORT_ATTEMPTS = 3  # over a new association; then the report is given up with a log line
REPORT_RETRY_SECONDS = 2.0
# A caller that releases right after our N-ACTION response would never answer a report sent on
# that association (we would wait network.dimse_timeout): give its A-RELEASE this long to come.
RELEASE_GRACE_SECONDS = 0.5


def commitment_report(db: Database, request: CommitmentRequest, caller: str) -> CommitmentReport:
    """What the node keeps of the instances `caller` (its AE title) asks about (see the module
    docstring)."""
    known = kept_copies(db, [ref.sop_instance_uid for ref in request.references])
    committed, failed, collided = [], [], []
    for ref in request.references:
        copy = known.get(ref.sop_instance_uid)
        if copy is None or not copy.path.is_file():
            failed.append(Failure(ref, NO_SUCH_OBJECT_INSTANCE))
        elif copy.refused_from and caller != copy.calling_aet:
            failed.append(Failure(ref, NO_SUCH_OBJECT_INSTANCE))
            collided.append((ref.sop_instance_uid, copy.calling_aet))
        elif copy.sop_class_uid != ref.sop_class_uid:
            failed.append(Failure(ref, CLASS_INSTANCE_CONFLICT))
        else:
            committed.append(ref)
    if collided:
        _not_confirmed.warning(
            caller,
            "storage commitment not confirmed for %d instance(s) transaction=%s calling_aet=%s: "
            "a copy of each was refused as a UID collision, and the node keeps another "
            "sender's image under it (first sop=%s, kept from %s)",
            len(collided),
            request.transaction_uid,
            caller,
            *collided[0],
        )
    return CommitmentReport(request.transaction_uid, tuple(committed), tuple(failed))


class CommitmentResponder:
    """The listener's N-ACTION handler and the sender of the reports it owes."""

    def __init__(self, settings: Settings, db: Database, waits: DatabaseWaits) -> None:
        """`waits` bounds what a request waits for in the database."""
        self.settings = settings
        self.db = db
        self._waits = waits
        self._owed: dict[int, tuple[CommitmentReport, Peer]] = {}  # per association
        # One report at a time awaits its answer on an association: when the first is answered,
        # its sender lets the reactor run again, which would take the second one's answer.
        self._reporting: WeakKeyDictionary[Association, threading.Lock] = WeakKeyDictionary()
        self._lock = threading.Lock()

    def handle_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        calling = event.assoc.requestor.ae_title
        if int(event.request.ActionTypeID or 0) != REQUEST_ACTION_TYPE:
            return status_dataset(NO_SUCH_ACTION, "only Action Type 1 (request commitment)"), None
        peer = self.settings.peer(calling)
        if peer is None:
            log.warning(
                "storage commitment refused calling_aet=%s address=%s: the calling AE title has "
                "no [[peers]] entry (add ae_title, host and port to send it reports)",
                calling,
                event.assoc.requestor.address,
            )
            return status_dataset(
                NOT_AUTHORISED, f"AE title {calling} has no [[peers]] entry"
            ), None
        try:
            request = read_request(event.action_information)
        except (ValueError, AttributeError, TypeError) as exc:
            log.warning("storage commitment request unreadable calling_aet=%s: %s", calling, exc)
            return status_dataset(PROCESSING_FAILURE, str(exc)), None
        try:
            report = self._waits(partial(commitment_report, self.db, request, calling))
        except Exception as exc:
            self._waits.tell(
                exc,
                ("commitment request", calling),
                "storage commitment request not answered transaction=%s calling_aet=%s",
                request.transaction_uid,
                calling,
                waited_for=WAITED_FOR,
            )
            return status_dataset(PROCESSING_FAILURE, UNANSWERED), None
        log.info(
            "storage commitment request transaction=%s calling_aet=%s committed=%d failed=%d",
            request.transaction_uid,
            calling,
            len(report.committed),
            len(report.failed),
        )
        with self._lock:
            self._owed[id(event.assoc)] = (report, peer)
        return SUCCESS, None

    def handle_sent(self, event: Event) -> None:
        """The report may follow the N-ACTION response, never come before it: its thread starts
        once the response is queued whole for the wire (EVT_DIMSE_SENT fires before encoding)."""
        if isinstance(event.message, N_ACTION_RSP):
            once_queued(lambda: self._start_report(event.assoc))

    def forget(self, event: Event) -> None:
        """The association closed before its N-ACTION response went out (it failed to encode,
        or the caller left): nothing is owed, and the log says which report was dropped."""
        owed = self._take_owed(event.assoc)
        if owed is not None:
            report, peer = owed
            log.warning(
                "storage commitment report not sent transaction=%s calling_aet=%s: the "
                "association ended before its N-ACTION response went out",
                report.transaction_uid,
                peer.ae_title,
            )

    def _take_owed(self, assoc: Association) -> tuple[CommitmentReport, Peer] | None:
        with self._lock:
            return self._owed.pop(id(assoc), None)

    def _start_report(self, assoc: Association) -> None:
        owed = self._take_owed(assoc)
        if owed is not None:
            report, peer = owed
            threading.Thread(
                target=self._send_report,
                args=(assoc, report, peer),
                name=f"commitment-report-{peer.ae_title.strip()}",
                daemon=True,
            ).start()

    def _send_report(self, assoc: Association, report: CommitmentReport, peer: Peer) -> None:
        time.sleep(RELEASE_GRACE_SECONDS)
        with self._lock:
            turn = self._reporting.setdefault(assoc, threading.Lock())
        with turn:
            on_the_same = assoc.is_established and _report_on(assoc, report)
        if on_the_same:
            log.info(
                "storage commitment report sent transaction=%s calling_aet=%s association=same",
                report.transaction_uid,
                peer.ae_title,
            )
            return
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            failure = self._report_to(peer, report)
            if failure is None:
                log.info(
                    "storage commitment report sent transaction=%s calling_aet=%s "
                    "association=new address=%s:%d",
                    report.transaction_uid,
                    peer.ae_title,
                    peer.host,
                    peer.port,
                )
                return
            log.warning(
                "storage commitment report not delivered transaction=%s calling_aet=%s "
                "address=%s:%d attempt=%d/%d: %s",
                report.transaction_uid,
                peer.ae_title,
                peer.host,
                peer.port,
                attempt,
                REPORT_ATTEMPTS,
                failure,
            )
            time.sleep(REPORT_RETRY_SECONDS)

    def _report_to(self, peer: Peer, report: CommitmentReport) -> str | None:
        """Send the report over a new association; None on success, else why not."""
        ae = requestor_ae(self.settings)  # the caller's answer read within bounds
        # PS3.4 J.3.3: on an association we request, we are the SCP of Storage Commitment.
        assoc = ae.associate(
            peer.host,
            peer.port,
            [build_context(COMMITMENT_CLASS_UID)],
            ae_title=peer.ae_title,
            ext_neg=[build_role(COMMITMENT_CLASS_UID, scu_role=False, scp_role=True)],
            evt_handlers=[CONNECTION_TUNING_HANDLER, bounded_waits_handler(self.settings.network)],
            max_pdu=self.settings.node.max_pdu_size,
        )
        if not assoc.is_established:
            refused = refused_reason(assoc)
            if refused is not None:
                return f"association aborted: its answer broke a limit ({refused})"
            return "association not established (rejected, refused or no answer)"
        try:
            return None if _report_on(assoc, report) else "no or a failure response"
        finally:
            if assoc.is_established:
                assoc.release()


def _report_on(assoc: Association, report: CommitmentReport) -> bool:
    """Send the N-EVENT-REPORT; True when the caller answered Success."""
    try:
        status, _reply = assoc.send_n_event_report(
            report_dataset(report), report.event_type, COMMITMENT_CLASS_UID, COMMITMENT_INSTANCE_UID
        )
    except (RuntimeError, ValueError) as exc:  # no usable context, or the association ended
        log.debug("storage commitment report not sent on this association: %s", exc)
        return False
    return status is not None and "Status" in status and int(status.Status) == SUCCESS
