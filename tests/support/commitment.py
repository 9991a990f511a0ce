"""Storage Commitment peers in the test process (pynetdicom), for both sides of the node.

`CommitmentPeer` is a PACS: it stores, and answers commitment requests on the same association,
reporting chosen instances failed once or never reporting at all. `Modality` asks the node for
commitment as a modality would, and receives the report on its association or on its own
listener (the `[[peers]]` address the node calls back).
"""

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.dicom.commitment import (
    COMMITMENT_INSTANCE_UID,
    CommitmentReport,
    CommitmentRequest,
    Failure,
    Reference,
    read_report,
    read_request,
    report_dataset,
    request_dataset,
)
from tests.support.ports import free_port

_NO_SUCH_OBJECT = 0x0112


@dataclass
class CommitmentPeer:
    """A storage + Storage Commitment SCP; `fail_once`: UIDs reported failed (for
    `failure_reason`) the first time they are asked for; `silent`: answer every N-ACTION but
    never send a report; `action_status`: the N-ACTION's answer (not 0: no report)."""

    ae_title: str = "COMMITPEER"
    fail_once: set[str] = field(default_factory=set)
    silent: bool = False
    failure_reason: int = _NO_SUCH_OBJECT
    action_status: int = 0x0000
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.stored: Counter[str] = Counter()
        self.requests: list[CommitmentRequest] = []
        self._owed: dict[int, CommitmentReport] = {}
        self._responding: set[int] = set()  # associations whose N-ACTION response is on its way
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def destination(self, name: str = "peer", timeout: float = 30) -> dict[str, object]:
        return {
            "name": name,
            "ae_title": self.ae_title,
            "host": "127.0.0.1",
            "port": self.port,
            "storage_commitment": True,
            "commitment_timeout_seconds": timeout,
        }

    def start(self) -> "CommitmentPeer":
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self._store),
                (evt.EVT_N_ACTION, self._action),
                (evt.EVT_DIMSE_SENT, self._sent),
                (evt.EVT_PDU_SENT, self._pdu_sent),
            ],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _store(self, event: Event) -> int:
        with self._lock:
            self.stored[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0x0000

    def _action(self, event: Event) -> tuple[int, Dataset | None]:
        request = read_request(event.action_information)
        committed, failed = [], []
        with self._lock:
            self.requests.append(request)
            for ref in request.references:
                if ref.sop_instance_uid in self.fail_once or not self.stored[ref.sop_instance_uid]:
                    self.fail_once.discard(ref.sop_instance_uid)
                    failed.append(Failure(ref, self.failure_reason))
                else:
                    committed.append(ref)
            if not self.silent and self.action_status == 0x0000:
                report = CommitmentReport(request.transaction_uid, tuple(committed), tuple(failed))
                self._owed[id(event.assoc)] = report
        return self.action_status, None

    def _sent(self, event: Event) -> None:
        """EVT_DIMSE_SENT fires before the N-ACTION response is encoded: a report sent from here
        could reach the node before the response (PS3.4 J.3.3: it follows the response), so it
        waits for the response's own P-DATA (`_pdu_sent`)."""
        if type(event.message).__name__ == "N_ACTION_RSP":
            with self._lock:
                self._responding.add(id(event.assoc))

    def _pdu_sent(self, event: Event) -> None:
        """The first P-DATA out after an N-ACTION response began is that response (a command
        alone, one PDU): its report may follow now, on the same association."""
        if not isinstance(event.pdu, P_DATA_TF):
            return
        with self._lock:
            if id(event.assoc) not in self._responding:
                return
            self._responding.discard(id(event.assoc))
            report = self._owed.pop(id(event.assoc), None)
        if report is not None:
            threading.Thread(target=_report, args=(event.assoc, report), daemon=True).start()


def _report(assoc, report: CommitmentReport) -> None:  # type: ignore[no-untyped-def]
    assoc.send_n_event_report(
        report_dataset(report),
        report.event_type,
        StorageCommitmentPushModel,
        COMMITMENT_INSTANCE_UID,
    )


@dataclass
class Modality:
    """A modality asking the node for commitment; its listener takes reports sent back on a new
    association (its `[[peers]]` entry: `peer()`)."""

    ae_title: str = "MODALITY"
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.reports: list[CommitmentReport] = []
        self.via: dict[str, str] = {}  # Transaction UID -> "same" or "new" association
        self._arrived = threading.Condition()
        self._server: ThreadedAssociationServer | None = None

    def peer(self) -> dict[str, object]:
        return {"ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port}

    def start(self) -> "Modality":
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_report(self, event: Event) -> tuple[int, None]:
        report = read_report(event.event_information)
        with self._arrived:
            self.reports.append(report)
            self.via[report.transaction_uid] = "same" if event.assoc.is_requestor else "new"
            self._arrived.notify_all()
        return 0x0000, None

    def ask(
        self,
        node_port: int,
        files: list[Path],
        extra_uids: tuple[str, ...] = (),
        *,
        stay: bool = True,
    ) -> tuple[int, str]:
        """Send an N-ACTION for `files` (and `extra_uids`, never stored); return the status and
        the Transaction UID. `stay`: keep the association open until the report came on it."""
        request = self._request(files, extra_uids)
        answered = threading.Event()

        def note_the_answer(event: Event) -> None:
            # The first P-DATA sent once the report is in is its answer: releasing before it
            # went out would send it in the wrong state (pynetdicom's DUL then dies: Evt9, Sta7).
            if isinstance(event.pdu, P_DATA_TF) and request.transaction_uid in self.via:
                answered.set()

        assoc = self._associate(node_port, self._on_report, (evt.EVT_PDU_SENT, note_the_answer))
        try:
            status = self._send_action(assoc, request)
            if stay and status == 0:
                self.report_for(request.transaction_uid)
                answered.wait(30)
        finally:
            assoc.release()
        return status, request.transaction_uid

    def ask_and_echo_while_reported(
        self, node_port: int, files: list[Path]
    ) -> tuple[int, int, str]:
        """Send an N-ACTION, then a C-ECHO on the same association while the node's report on it
        waits for this modality's answer (held until the echo is on its way). Return the
        N-ACTION's and the C-ECHO's status (-1: no answer) and the Transaction UID."""
        reporting, echo_sent = threading.Event(), threading.Event()

        def answer_after_the_echo(event: Event) -> tuple[int, None]:
            reporting.set()
            echo_sent.wait(30)
            time.sleep(0.3)  # the C-ECHO reaches the node before this answer does
            return self._on_report(event)

        request = self._request(files)
        assoc = self._associate(node_port, answer_after_the_echo)
        try:
            status = self._send_action(assoc, request)
            assert reporting.wait(30), "no storage commitment report on the association"
            echo_sent.set()
            echo = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        return status, int(echo.Status) if "Status" in echo else -1, request.transaction_uid

    def ask_and_release_while_reported(
        self, node_port: int, files: list[Path]
    ) -> tuple[int, bool, str]:
        """Send an N-ACTION, then release the association while the node's report on it waits
        for this modality's answer (which is held until the release is over, then dropped).
        Return the N-ACTION's status, whether the association was released (not aborted) and
        the Transaction UID; the report must then come to this modality's listener."""
        reporting, released = threading.Event(), threading.Event()

        def answer_after_the_release(event: Event) -> tuple[int, None]:
            reporting.set()
            released.wait(60)
            return 0x0000, None  # too late: the node no longer waits for it

        request = self._request(files)
        assoc = self._associate(node_port, answer_after_the_release)
        try:
            status = self._send_action(assoc, request)
            assert reporting.wait(30), "no storage commitment report on the association"
            assoc.release()
        finally:
            released.set()
        return status, bool(assoc.is_released), request.transaction_uid

    def ask_twice(self, node_port: int, files: list[Path]) -> tuple[list[int], list[str]]:
        """Send two N-ACTIONs back to back on one association, so that the node owes two reports
        on it at once; stay until both came. Return the statuses and the Transaction UIDs."""
        requests = [self._request(files), self._request(files)]

        def answer_slowly(event: Event) -> tuple[int, None]:
            time.sleep(0.5)  # both reports are sent before the first answer goes back
            return self._on_report(event)

        assoc = self._associate(node_port, answer_slowly)
        try:
            statuses = [self._send_action(assoc, request) for request in requests]
            for request in requests:
                self.report_for(request.transaction_uid)
            time.sleep(1.0)  # the last report's answer goes out before the release
        finally:
            assoc.release()
        return statuses, [request.transaction_uid for request in requests]

    @staticmethod
    def _request(files: list[Path], extra_uids: tuple[str, ...] = ()) -> CommitmentRequest:
        references = [
            Reference(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
            for ds in (dcmread(path, stop_before_pixels=True) for path in files)
        ]
        references += [Reference(references[0].sop_class_uid, uid) for uid in extra_uids]
        return CommitmentRequest(generate_uid(), tuple(references))

    def _associate(self, node_port: int, on_report, *handlers) -> Association:  # type: ignore[no-untyped-def]
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.add_requested_context(Verification)
        assoc = ae.associate(
            "127.0.0.1",
            node_port,
            ae_title="DICOMNODE",
            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report), *handlers],
        )
        assert assoc.is_established, "the node refused the association"
        return assoc

    @staticmethod
    def _send_action(assoc: Association, request: CommitmentRequest) -> int:
        status, _ = assoc.send_n_action(
            request_dataset(request), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
        return int(status.Status)

    def report_for(self, transaction_uid: str, timeout: float = 60) -> CommitmentReport:
        with self._arrived:
            self._arrived.wait_for(
                lambda: any(r.transaction_uid == transaction_uid for r in self.reports), timeout
            )
            found = [r for r in self.reports if r.transaction_uid == transaction_uid]
        assert found, f"no storage commitment report for transaction {transaction_uid}"
        return found[0]
