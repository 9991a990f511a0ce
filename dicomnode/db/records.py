"""Plain, frozen records that leave the db layer (no SQLAlchemy objects escape it)."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dicomnode.status import DeliveryStatus, JobPart, JobStatus

# The states in which a job's next_attempt_at is when it will next be taken up.
WAITING_FOR_AN_ATTEMPT = (JobStatus.QUEUED, JobStatus.FAILED)


def printable_code(text: str) -> str:
    """A code string (Modality) as the database can keep it: printable ASCII only, no padding,
    at most 16 characters (CS, PS3.5 6.2). Some devices pad CS with NUL, or put one inside;
    PostgreSQL refuses text with NUL, so every instance of such a device would be refused
    (0xA700) again and again."""
    return "".join(c for c in text if " " <= c <= "~").strip()[:16]


@dataclass(frozen=True)
class ReceivedInstance:
    """What the receiver knows about one stored instance."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_uid: str
    series_uid: str
    modality: str
    path: Path
    size_bytes: int
    calling_aet: str
    # Whether this copy may replace one of its SOP Instance UID that another sender filed in
    # another series (node.on_duplicate = "replace"); if not, it is not recorded (`KeptOut`)
    # and the receiver refuses it.
    replaces_foreign: bool = True


@dataclass(frozen=True)
class KeptOut:
    """A copy not recorded: another sender filed its SOP Instance UID in another series."""

    series_uid: str
    calling_aet: str


@dataclass(frozen=True)
class SpooledInstance:
    """An input of a job: one spooled file and the UIDs needed to send it."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path


@dataclass(frozen=True)
class DeliveryRecord:
    destination: str
    status: DeliveryStatus
    attempts: int
    sent: int
    error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class JobEventRecord:
    """One line of a job's history: an attempt's outcome or an admin action."""

    at: datetime
    kind: str
    job_id: int | None = None
    attempt: int | None = None
    status: str | None = None
    detail: str | None = None
    user: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "kind": self.kind,
            "attempt": self.attempt,
            "status": self.status,
            "detail": self.detail,
            "user": self.user,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"


@dataclass(frozen=True)
class JobRecord:
    id: int
    study_uid: str
    series_uid: str
    part: JobPart
    status: JobStatus
    attempts: int
    instances: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    lease_owner: str | None
    deliveries: tuple[DeliveryRecord, ...]
    details: dict[str, Any] | None = None
    released: bool = False
    claimed_by: str | None = None  # who took the latest attempt (host:pid:runner:claim)
    replay: str | None = None  # `status.Replay` while a release or resend is to be sent
    outputs: dict[str, Any] | None = None  # what the last attempt held and sent unenhanced
    history: tuple[JobEventRecord, ...] = ()  # oldest first
    claims: int = 0  # claims of the job ever made (the latest one's number while it runs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form used by `dicomnode jobs ... --json` (times in ISO 8601 UTC)."""
        return {
            "id": self.id,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "part": self.part,
            "status": self.status,
            "attempts": self.attempts,
            "instances": self.instances,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            # Only a queued or failed job will be taken up again: a done job's last retry time
            # would read as an attempt still to come.
            "next_attempt_at": (
                _iso(self.next_attempt_at) if self.status in WAITING_FOR_AN_ATTEMPT else None
            ),
            "lease_owner": self.lease_owner,
            "claimed_by": self.claimed_by,
            "details": self.details,
            "released": self.released,
            "deliveries": [
                {
                    "destination": d.destination,
                    "status": d.status,
                    "attempts": d.attempts,
                    "sent": d.sent,
                    "error": d.error,
                    "updated_at": _iso(d.updated_at),
                }
                for d in self.deliveries
            ],
            "replay": self.replay,
            "history": [event.as_dict() for event in self.history],
        }
