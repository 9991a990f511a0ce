"""Storage Commitment Push Model messages (PS3.4 Annex J): the request and the report.

Both sides of the node use these: the forwarder builds requests and reads reports, the receiver
reads requests and builds reports. Reading validates what a peer sent; a malformed message is
a ValueError naming the attribute, which each boundary maps to its own status.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.sop_class import StorageCommitmentPushModel

# PS3.4 J.3.1: the one, well-known SOP Instance every request and report is addressed to.
COMMITMENT_INSTANCE_UID = UID("1.2.840.10008.1.20.1.1")
COMMITMENT_CLASS_UID = UID(StorageCommitmentPushModel)
REQUEST_ACTION_TYPE = 1  # PS3.4 J.3.2.1: Request Storage Commitment
ALL_COMMITTED_EVENT = 1  # PS3.4 J.3.3.1: Storage Commitment Request Successful
SOME_FAILED_EVENT = 2  # PS3.4 J.3.3.1: Storage Commitment Request Complete - Failures Exist

# PS3.3 C.14.1.1 Failure Reason values the node reports or reads.
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class Reference:
    """One instance named in a request or a report."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Failure:
    reference: Reference
    reason: int


@dataclass(frozen=True)
class CommitmentRequest:
    transaction_uid: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class CommitmentReport:
    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[Failure, ...]

    @property
    def event_type(self) -> int:
        return SOME_FAILED_EVENT if self.failed else ALL_COMMITTED_EVENT


def _items(references: Iterable[Reference]) -> list[Dataset]:
    items = []
    for reference in references:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class_uid
        item.ReferencedSOPInstanceUID = reference.sop_instance_uid
        items.append(item)
    return items


def _references(dataset: Dataset, keyword: str) -> list[tuple[Reference, Dataset]]:
    found = []
    for item in dataset.get(keyword, []):
        class_uid = str(item.get("ReferencedSOPClassUID", "") or "")
        instance_uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if not class_uid or not instance_uid:
            raise ValueError(f"an item of {keyword} lacks its SOP class or instance UID")
        found.append((Reference(class_uid, instance_uid), item))
    return found


def _transaction_uid(dataset: Dataset) -> str:
    uid = str(dataset.get("TransactionUID", "") or "")
    if not uid or not UID(uid).is_valid:
        raise ValueError(f"TransactionUID {uid!r} is missing or not a valid UID")
    return uid


def request_dataset(request: CommitmentRequest) -> Dataset:
    """The Action Information of an N-ACTION request (PS3.4 J.3.2.1.1, Table J.3-1)."""
    dataset = Dataset()
    dataset.TransactionUID = request.transaction_uid
    dataset.ReferencedSOPSequence = _items(request.references)
    return dataset


def read_request(dataset: Dataset | None) -> CommitmentRequest:
    """A caller's request, validated (ValueError names what is wrong)."""
    if dataset is None:
        raise ValueError("the N-ACTION carries no Action Information")
    references = _references(dataset, "ReferencedSOPSequence")
    if not references:
        raise ValueError("ReferencedSOPSequence is missing or empty")
    return CommitmentRequest(_transaction_uid(dataset), tuple(ref for ref, _ in references))


def report_dataset(report: CommitmentReport) -> Dataset:
    """The Event Information of an N-EVENT-REPORT (PS3.4 J.3.3.1.1, Table J.3-2)."""
    dataset = Dataset()
    dataset.TransactionUID = report.transaction_uid
    if report.committed:
        dataset.ReferencedSOPSequence = _items(report.committed)
    if report.failed:
        items = _items(failure.reference for failure in report.failed)
        for item, failure in zip(items, report.failed, strict=True):
            item.FailureReason = failure.reason
        dataset.FailedSOPSequence = items
    return dataset


def read_report(dataset: Dataset | None) -> CommitmentReport:
    """A peer's report, validated (ValueError names what is wrong)."""
    if dataset is None:
        raise ValueError("the N-EVENT-REPORT carries no Event Information")
    committed = tuple(ref for ref, _ in _references(dataset, "ReferencedSOPSequence"))
    failed = tuple(
        Failure(ref, int(item.get("FailureReason", PROCESSING_FAILURE) or PROCESSING_FAILURE))
        for ref, item in _references(dataset, "FailedSOPSequence")
    )
    return CommitmentReport(_transaction_uid(dataset), committed, failed)
