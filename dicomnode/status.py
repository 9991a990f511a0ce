"""The states a job and a delivery can be in: one enum each, shared by every layer.

Kept apart from the database models so that the CLI can offer them (`jobs list --status`) without
importing SQLAlchemy, and records and the state machine can name them without the tables.
"""

import enum


class JobStatus(enum.StrEnum):
    """The job state machine (see ARCHITECTURE.md): queued → processing → forwarding → done."""

    QUEUED = "queued"
    PROCESSING = "processing"
    FORWARDING = "forwarding"
    DONE = "done"
    FAILED = "failed"  # will be picked up again at next_attempt_at
    DEAD = "dead"  # gave up; inputs kept; `dicomnode jobs retry` revives it
    CANCELLED = "cancelled"
    HELD = "held"  # QA held the derived series back; `dicomnode jobs release` sends them
    # Received and kept, sent nowhere: no destination was configured (and node.receive_only is
    # off). Retention never purges it: the node that lost its destinations must not lose data.
    STORED = "stored"


# A worker holds these under a lease; every other state is at rest.
ACTIVE_STATUSES = (JobStatus.PROCESSING, JobStatus.FORWARDING)


class JobPart(enum.StrEnum):
    """What a job delivers. A series gets one job per part, so the originals reach the PACS at
    once, whatever happens to the enhancement (ARCHITECTURE.md: "The router comes first")."""

    ORIGINALS = "originals"  # the instances as received, to every destination that takes them
    DERIVED = "derived"  # the enhancement: derived series and metrics reports


class DeliveryStatus(enum.StrEnum):
    """One destination's part of a job."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # transient: tried again with the job
    DEAD = "dead"  # permanent, or out of attempts


class Replay(enum.StrEnum):
    """What a job's next attempt sends again from its last one, instead of processing anew."""

    HELD = "held"  # `jobs release`: only the derived series QA held back
    SENT = "sent"  # `jobs resend`: what the job delivered (originals, or derived series + SR)
