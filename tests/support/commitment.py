"""Storage Commitment peers in the test process (pynetdicom), for both sides of the node.

`CommitmentPeer` is a PACS: it stores, and answers commitment requests on the same association,
reporting chosen instances failed once or never reporting at all. `Modality` asks the node for
commitment as a modality would, and receives the report on its association or on its own
listener (the `[[peers]]` address the node calls back).
"""

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel
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
    """A storage + Storage Commitment SCP; `fail_once`: UIDs reported failed the first time
    they are asked for; `silent`: answer every N-ACTION but never send a report."""

    ae_title: str = "COMMITPEER"
    fail_once: set[str] = field(default_factory=set)
    silent: bool = False
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.stored: Counter[str] = Counter()
        self.requests: list[CommitmentRequest] = []
        self._owed: dict[int, CommitmentReport] = {}
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
                    failed.append(Failure(ref, _NO_SUCH_OBJECT))
                else:
                    committed.append(ref)
            if not self.silent:
                report = CommitmentReport(request.transaction_uid, tuple(committed), tuple(failed))
                self._owed[id(event.assoc)] = report
        return 0x0000, None

    def _sent(self, event: Event) -> None:
        if type(event.message).__name__ != "N_ACTION_RSP":
            return
        with self._lock:
            report = self._owed.pop(id(event.assoc), None)
        if report is not None:  # on the same association, after the N-ACTION response
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
        references = [
            Reference(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
            for ds in (dcmread(path, stop_before_pixels=True) for path in files)
        ]
        references += [Reference(references[0].sop_class_uid, uid) for uid in extra_uids]
        request = CommitmentRequest(generate_uid(), tuple(references))
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(
            "127.0.0.1",
            node_port,
            ae_title="DICOMNODE",
            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )
        assert assoc.is_established, "the node refused the association"
        try:
            status, _ = assoc.send_n_action(
                request_dataset(request), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
            )
            if stay and int(status.Status) == 0:
                self.report_for(request.transaction_uid)
        finally:
            assoc.release()
        return int(status.Status), request.transaction_uid

    def report_for(self, transaction_uid: str, timeout: float = 60) -> CommitmentReport:
        with self._arrived:
            self._arrived.wait_for(
                lambda: any(r.transaction_uid == transaction_uid for r in self.reports), timeout
            )
            found = [r for r in self.reports if r.transaction_uid == transaction_uid]
        assert found, f"no storage commitment report for transaction {transaction_uid}"
        return found[0]
