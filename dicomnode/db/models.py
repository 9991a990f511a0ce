"""The tables: what was received (studies, series, instances) and what to do (jobs, deliveries).

Times are naive UTC datetimes throughout (SQLite keeps no time zone), by the database's clock
(`db/clock.db_now`: on PostgreSQL the server's, on SQLite this host's `utcnow`).
"""

from datetime import UTC, datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dicomnode.status import DeliveryStatus, JobPart, JobStatus


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"

    study_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Series(Base):
    __tablename__ = "series"

    series_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # True while the series holds instances that no job has taken yet (the completion rule).
    pending: Mapped[bool] = mapped_column(default=True, index=True)
    # When a sender last released (A-RELEASE) an association that stored into this series: with
    # nothing newer received, the sender said it is done (the completion rule's fast path).
    released_at: Mapped[datetime | None] = mapped_column(default=None)


class Instance(Base):
    __tablename__ = "instances"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.series_uid"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RefusedCopy(Base):
    """A sender's copy of a stored SOP Instance UID that the node refused as a UID collision
    (`node.on_duplicate = "replace_unless_foreign"`; with "keep", acknowledged but not kept):
    the node holds another image under that UID, so a Storage Commitment request from anyone
    but the stored copy's sender must not be told it keeps this one (`receive/commitment.py`).
    Forgotten with the stored copy's series."""

    __tablename__ = "refused_copies"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    calling_aet: Mapped[str] = mapped_column(String(16), primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64))  # the refused copy's
    refused_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One part (originals or derived) of one source series to process and deliver."""

    __tablename__ = "jobs"
    # AUTOINCREMENT: SQLite would otherwise hand a purged job's id to the next job, and logs,
    # outbox folders and `jobs show N` would then name two different jobs.
    __table_args__ = (
        Index("ix_jobs_status_next", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64), index=True)
    # A database from before parts holds jobs that did both; they resume as originals jobs, so
    # nothing received is left unsent (their enhancement is not redone).
    part: Mapped[str] = mapped_column(String(16), default=JobPart.ORIGINALS)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Claims of the job ever made, never lowered (a retry or resend resets `attempts`): each
    # attempt's outbox folder is named by its claim's number (`Spool.outbox_attempt`), so
    # attempts sort as they were claimed, whatever the clocks of the workers that made them.
    claims: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts since an admin last queued the job that ended before delivery (the enhancement,
    # the inputs): they alone count towards MAX_PROCESSING_ATTEMPTS, so a PACS down for a day
    # does not use them up. Reset with `attempts`.
    failures_before_delivery: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # JSON: what the last processing attempt did (device, model, timings, metrics per method).
    details: Mapped[str | None] = mapped_column(Text, default=None)
    released: Mapped[bool] = mapped_column(default=False)  # an admin overrode a QA hold
    # `status.Replay`: the next attempt sends from the outbox instead of processing (release,
    # resend); None: process as usual.
    replay: Mapped[str | None] = mapped_column(String(16), default=None)
    # JSON: what the last processing attempt made, held back and sent unenhanced (a derived
    # job), so a release or resend sends exactly that again: {"outbox": its outbox folder,
    # "series": [series UIDs], "held": [series UIDs], "hold": why QA held them (None: nothing
    # held), "unenhanced": [SOPs]}.
    outputs: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # The lease owner of the latest attempt, kept after it ends: which worker (host:pid:runner)
    # did the job, when several processes share the table.
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)


class JobEvent(Base):
    """A job's history: each attempt's outcome and each admin action (kept across retries).

    Admin actions are written by the CLI, a process of its own; the node logs them (and sets
    `logged`), so they appear in the node's log beside the attempts they caused. No foreign
    key: the record of a `jobs discard` outlives the job it removed.
    """

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # `history.EventKind`
    attempt: Mapped[int | None] = mapped_column(Integer, default=None)
    status: Mapped[str | None] = mapped_column(String(16), default=None)  # the job's state after
    detail: Mapped[str | None] = mapped_column(Text, default=None)  # the error, or what was done
    user: Mapped[str | None] = mapped_column(String(64), default=None)  # who, for admin actions
    logged: Mapped[bool] = mapped_column(default=True, index=True)


class JobInstance(Base):
    """The instances a job was created with (its inputs, kept whatever becomes of the job)."""

    __tablename__ = "job_instances"
    # By instance too: deleting an instance row checks this table's foreign key, and purging a
    # series looks its instances up here; without it each read every link (millions in a year).
    __table_args__ = (Index("ix_job_instances_sop", "sop_instance_uid"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(
        ForeignKey("instances.sop_instance_uid"), primary_key=True
    )


class Delivery(Base):
    """A job's delivery to one destination, tracked apart so one PACS never blocks another."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveredInstance(Base):
    """An instance a destination stored (a C-STORE answered success or warning) while its
    delivery is not done yet: a retry sends only the others, if the destination is still the
    same `peer`. The rows go when the delivery is done, when an admin has the job sent again
    (retry, resend, release: the PACS may have lost what it had), and with their job (ON
    DELETE CASCADE: also when a version from before this table purges or discards it)."""

    __tablename__ = "delivered_instances"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    peer: Mapped[str] = mapped_column(Text, default="")  # `Destination.peer` then


class Commitment(Base):
    """One instance a job sent to a destination with Storage Commitment, and what the peer said.

    `transaction_uid` is the latest request that asked for it (PS3.4 J.3.2); the peer's report
    names that UID, so a report that comes late, on any association, still finds its rows.
    `previous_transaction_uid` is the request before it: a peer slower than
    `commitment_timeout_seconds` reports on that one while the retry waits for its own.
    """

    __tablename__ = "commitments"
    __table_args__ = (
        Index("ix_commitments_job_destination", "job_id", "destination"),
        Index("ix_commitments_state", "state"),  # the pending few among a year's confirmed
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    destination: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transaction_uid: Mapped[str] = mapped_column(String(64), index=True)
    previous_transaction_uid: Mapped[str | None] = mapped_column(
        String(64), index=True, default=None
    )
    state: Mapped[str] = mapped_column(String(16), default="pending")
    failure_reason: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SpoolIdentity(Base):
    """The spool this database belongs to: the identity written in the spool's own identity file
    (`spool_identity.py`). One row, `name` = "spool": a second process that claims another
    identity at the same moment loses on the key."""

    __tablename__ = "spool_identity"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    identity: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Rounds of the completion tick that made jobs, as the spool's generation file also counts
    # them: a database restored from a copy counts fewer (`spool_identity.py`).
    generation: Mapped[int] = mapped_column(default=0)


class LayoutGeneration(Base):
    """The generation of the tables and spool layout the newest dicomnode that used this
    database writes (`db/generation.py`): an older one refuses what it would misread. One row,
    `name` = "layout"."""

    __tablename__ = "layout_generation"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
