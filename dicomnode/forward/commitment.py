"""Storage Commitment as SCU (PS3.4 J.3): ask a destination to confirm it keeps what it got.

After a delivery's C-STOREs, the instances the destination has not yet confirmed are named in
one N-ACTION under a new Transaction UID, recorded first as pending. The destination answers
with an N-EVENT-REPORT, on the same association (we propose the SCP role for it there) or on a
new one to our listener, as it chooses; either way `record_commitment_report` files it by the
Transaction UID, and the delivery polls the database until nothing is pending or
`commitment_timeout_seconds` have passed. A shortfall is a transient ForwardError (failed
instances are sent and asked for again on the next attempt, a missing report is retried) unless
asking again cannot change it: a request refused for good, or only failure reasons for good.
"""

import logging
import time
from collections.abc import Sequence

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from dicomnode.config import Destination, Settings
from dicomnode.db import Database, SpooledInstance
from dicomnode.db.commitments import (
    TransactionState,
    committed_uids,
    record_report,
    record_request,
    transaction_state,
)
from dicomnode.dicom.commitment import (
    COMMITMENT_CLASS_UID,
    COMMITMENT_INSTANCE_UID,
    REQUEST_ACTION_TYPE,
    CommitmentRequest,
    Reference,
    read_report,
    request_dataset,
)
from dicomnode.dicom.release import ReportThreads, release
from dicomnode.errors import ForwardError
from dicomnode.forward.outcome import is_warning
from dicomnode.forward.scu import _associate
from dicomnode.observe.throttle import ThrottledWarnings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
_SUCCESS = 0x0000
_PROCESSING_FAILURE = 0x0110


# Reports we cannot use, one line a minute per kind and calling AE: any caller our listener
# accepts may send them, as often as it likes.
_unusable_reports = ThrottledWarnings(log)


def record_commitment_report(db: Database, event: Event) -> tuple[int, Dataset | None]:
    """An EVT_N_EVENT_REPORT handler, for the forwarder's association and for the listener:
    file a destination's report under its Transaction UID and acknowledge it."""
    # On our own association (the forwarder's) the report comes from the destination we called.
    peer = event.assoc.acceptor if event.assoc.is_requestor else event.assoc.requestor
    calling = peer.ae_title or "-"
    try:
        report = read_report(event.event_information)
    except (ValueError, AttributeError, TypeError) as exc:
        _unusable_reports.warning(
            ("unreadable", calling),
            "storage commitment report unreadable calling_aet=%s: %s",
            calling,
            exc,
        )
        return _PROCESSING_FAILURE, None
    matched = record_report(db, report)
    if not matched:
        _unusable_reports.warning(
            ("unknown", calling),
            "storage commitment report for an unknown transaction=%s calling_aet=%s",
            report.transaction_uid,
            calling,
        )
    else:
        named = len(report.committed) + len(report.failed)
        log.info(
            "storage commitment report transaction=%s calling_aet=%s committed=%d failed=%d%s",
            report.transaction_uid,
            calling,
            len(report.committed),
            len(report.failed),
            f" not_asked={named - matched}" if named > matched else "",  # ignored
        )
    return _SUCCESS, None


def _references(instances: Sequence[SpooledInstance], skip: set[str]) -> list[Reference]:
    unique = {
        item.sop_instance_uid: Reference(item.sop_class_uid, item.sop_instance_uid)
        for item in instances
        if item.sop_instance_uid not in skip
    }
    return list(unique.values())


def uncommitted(
    db: Database, job_id: int, destination: Destination, series: Sequence[SpooledInstance]
) -> list[SpooledInstance]:
    """What of `series` still has to be sent: all but what the destination confirmed keeping."""
    done = committed_uids(db, job_id, destination.name)
    return [item for item in series if item.sop_instance_uid not in done]


def confirm_commitment(
    job_id: int,
    destination: Destination,
    instances: Sequence[SpooledInstance],
    settings: Settings,
    db: Database,
) -> int:
    """Ask for every instance not yet confirmed and wait for the report; return how many the
    destination keeps (all of `instances`) or raise a ForwardError saying what is missing
    (transient unless asking again cannot change it)."""
    already = committed_uids(db, job_id, destination.name)
    references = _references(instances, already)
    if not references:
        return len(already)
    request = CommitmentRequest(generate_uid(), tuple(references))
    # Recorded before asking: a report may come back on another association at once.
    record_request(db, job_id, destination.name, request.transaction_uid, references)
    started = time.monotonic()
    reports = ReportThreads()
    try:
        assoc = _associate(
            destination,
            settings,
            [build_context(COMMITMENT_CLASS_UID)],
            # PS3.4 J.3.3: the destination may send its report on this association, as the SCP.
            ext_neg=[build_role(COMMITMENT_CLASS_UID, scu_role=True, scp_role=True)],
            handlers=[
                (
                    evt.EVT_N_EVENT_REPORT,
                    reports.tracked(lambda event: record_commitment_report(db, event)),
                )
            ],
        )
    except ForwardError as exc:  # e.g. a peer without Storage Commitment: say what was asked
        raise ForwardError(f"storage commitment: {exc}", transient=exc.transient) from None
    try:
        _send_request(assoc, request, destination)
        state = _wait_for_report(assoc, reports, request.transaction_uid, destination, settings, db)
    finally:
        release(assoc, settings.network.dimse_timeout, reports)
    _check(state, request, destination, settings)
    log.info(
        "storage commitment confirmed job=%d destination=%s transaction=%s instances=%d "
        "seconds=%.2f",
        job_id,
        destination.name,
        request.transaction_uid,
        len(references),
        time.monotonic() - started,
    )
    return len(already) + state.committed


def _send_request(assoc: Association, request: CommitmentRequest, destination: Destination) -> None:
    status, _reply = assoc.send_n_action(
        request_dataset(request), REQUEST_ACTION_TYPE, COMMITMENT_CLASS_UID, COMMITMENT_INSTANCE_UID
    )
    if status is None or "Status" not in status:
        raise ForwardError(
            f"storage commitment: no N-ACTION response from {destination.name} (timeout or "
            f"abort) for transaction {request.transaction_uid}",
            transient=True,
        )
    code = int(status.Status)
    if code == _SUCCESS or is_warning(code):  # a warning: taken; its report still comes
        return
    comment = str(status.get("ErrorComment", "") or "")
    permanent = code in _REFUSED_FOR_GOOD
    hint = " (not authorised: is this node declared to it as a peer?)" if code == 0x0124 else ""
    raise ForwardError(
        f"storage commitment: {destination.name} refused the request with status "
        f"0x{code:04X}{': ' + comment if comment else ''}{hint}",
        transient=not permanent,
    )


# N-ACTION failure statuses (PS3.7 10.1.4.1.10 and Annex C) that asking again cannot change: no
# such SOP class, instance, action or argument, an invalid or mistyped argument, a class-instance
# conflict, an unrecognised operation, not authorised (the peer does not know us). 0x0122 (SOP
# class not supported) is C-STORE's, answered by some peers all the same.
_REFUSED_FOR_GOOD = frozenset(
    {0x0112, 0x0114, 0x0115, 0x0117, 0x0118, 0x0119, 0x0122, 0x0123, 0x0124, 0x0211, 0x0212}
)
# Failure Reasons of a report (PS3.3 C.14.1.1) that sending again cannot change.
_FAILED_FOR_GOOD = frozenset({0x0119, 0x0122})


def _wait_for_report(
    assoc: Association,
    reports: ReportThreads,
    transaction_uid: str,
    destination: Destination,
    settings: Settings,
    db: Database,
) -> TransactionState:
    """Poll the database for the report; the association is kept open for a report on it only
    while it cannot idle out (half of network.network_timeout), then released."""
    now = time.monotonic()
    deadline = now + destination.commitment_timeout_seconds
    hold_until = now + min(
        destination.commitment_timeout_seconds, settings.network.network_timeout / 2
    )
    while True:
        state = transaction_state(db, transaction_uid)
        if not state.pending or time.monotonic() >= deadline:
            return state
        if assoc.is_established and time.monotonic() >= hold_until:
            release(assoc, settings.network.dimse_timeout, reports)
        time.sleep(POLL_SECONDS)


def _check(
    state: TransactionState,
    request: CommitmentRequest,
    destination: Destination,
    settings: Settings,
) -> None:
    asked = len(request.references)
    if state.failed:
        shown = "; ".join(
            f"0x{reason or 0:04X} for sop={uid}" for uid, reason in state.failed[:3]
        ) + (f"; and {len(state.failed) - 3} more" if len(state.failed) > 3 else "")
        # Dead only when no failure could pass: those that may (0x0213 out of resources, 0x0112
        # not ingested yet) are sent and asked for again, as C-STORE refusals wait for them.
        for_good = all(reason in _FAILED_FOR_GOOD for _uid, reason in state.failed)
        raise ForwardError(
            f"storage commitment: {destination.name} did not commit {len(state.failed)} of "
            f"{asked} instances ({shown}); "
            + (
                "a reason that sending again cannot change (0x0122: SOP class not supported, "
                "0x0119: class-instance conflict)"
                if for_good
                else "they are sent and asked for again"
            ),
            transient=not for_good,
        )
    if state.pending:
        key = settings.destination_key(destination)
        raise ForwardError(
            f"storage commitment: no report from {destination.name} within "
            f"{key}.commitment_timeout_seconds={destination.commitment_timeout_seconds:g} s for "
            f"{state.pending} of {asked} instances (transaction {request.transaction_uid})",
            transient=True,
        )
