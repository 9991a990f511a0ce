"""Deliveries: one queue per destination, so a PACS that hangs only ever delays itself.

A runner processes a job (originals or derived), then hands its series to the queue of each
destination still missing them and goes on to the next job. Each queue has `worker.workers`
threads, at least one (with one, series go out in the order their jobs were handed over: a
series' originals before its derived series); a destination that hangs holds up its own queue
for at most the network timeouts per association, never another destination's. Runners stop
taking new jobs while `MAX_JOBS_FORWARDING_PER_WORKER` of their part wait in the queues.
The job is finished (done, failed with a retry time, or dead) when its last delivery returns.
A derived series waits while its originals failed to reach the destination (`originals_first`).
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from dicomnode.config import Destination, Settings
from dicomnode.db import Database, DeliveryStatus, JobRecord, SpooledInstance
from dicomnode.db.commitments import failed_uids
from dicomnode.db.delivered import delivered_uids
from dicomnode.db.failures import database_away, log_failure
from dicomnode.db.jobs import holds_lease, record_delivery
from dicomnode.db.originals_first import (
    originals_owed,
    waits_for_originals,
    wake_derived,
)
from dicomnode.db.transitions import not_configured
from dicomnode.errors import ForwardError, SeriesIncomplete, UnreadableSpool
from dicomnode.forward.commitment import confirm_commitment, uncommitted
from dicomnode.forward.echo import why_unanswered
from dicomnode.forward.scu import send_series
from dicomnode.observe.counters import STAGE_SECONDS
from dicomnode.pipeline.outage import through_outage
from dicomnode.status import JobPart

log = logging.getLogger(__name__)

Outgoing = list[list[SpooledInstance]]
T = TypeVar("T")

_SR_DOCUMENTS = "1.2.840.10008.5.1.4.1.1.88."  # the SR document storage classes (PS3.4 B.5)


def _is_report(item: SpooledInstance) -> bool:
    """An SR document: in a derived job, a metrics report (`destination.send_metrics_reports`)."""
    return item.sop_class_uid.startswith(_SR_DOCUMENTS)


def _refused_report_hint(
    job: JobRecord, destination: Destination, series: list[SpooledInstance], refusal: ForwardError
) -> str:
    """For a derived job's metrics report whose SOP class the peer refuses (no presentation
    context for it, or 0x0122), the setting that stops sending it: without it the job is dead
    on every retry although its images arrived. Nothing for an original SR (a dose report),
    which that setting does not touch, nor for a report refused for its content (0xA900,
    0xC000: ours to mend)."""
    report = job.part == JobPart.DERIVED and all(_is_report(item) for item in series)
    if not (report and refusal.class_refused):
        return ""
    return (
        " (the metrics report, an SR document: for a PACS that stores none, "
        f"send_metrics_reports = false on the [[destinations]] entry {destination.name!r} "
        "sends the derived images only)"
    )


def not_taken(destination: str, part: str, send: Sequence[str]) -> str:
    """The note of a delivery not made: its destination's `send` no longer names the job's
    part (it did when the job was made). Done, nothing sent: nothing is owed there."""
    return f"not sent: {destination} no longer takes {part} series (its send: {', '.join(send)})"


def deliver(
    settings: Settings,
    db: Database,
    job: JobRecord,
    owner: str,
    name: str,
    outgoing: Outgoing,
    stopping: threading.Event | None = None,
) -> None:
    """Send every series to one destination; the outcome goes to its own delivery row (while
    `owner`, the attempt's lease, still holds the job; through a database outage until the
    node is `stopping`)."""

    destination = settings.destination(name)
    earlier = 0  # instances of `outgoing` the destination stored on an earlier attempt
    stored: list[str] = []  # ... and on this one

    def record(status: DeliveryStatus, error: str | None) -> None:
        sent = earlier + len(stored)
        peer = destination.peer if destination is not None else ""
        recorded = through_outage(
            f"the delivery to {name}",
            job.id,
            lambda: record_delivery(db, job.id, owner, name, status, sent, error, stored, peer),
            patience=settings.worker.lease_seconds / 2,
            stopping=stopping,
        )
        if not recorded:
            log.info(
                "delivery outcome not recorded: the job is no longer this attempt's "
                "(cancelled, or taken over after its lease lapsed) job=%d destination=%s "
                "status=%s",
                job.id,
                name,
                status,
            )

    if destination is None:
        record(DeliveryStatus.DEAD, not_configured(name, job.id))
        return
    if job.part not in destination.send:  # a clinical PACS made originals-only meanwhile
        record(DeliveryStatus.DONE, not_taken(name, job.part, destination.send))
        log.info("delivery skipped job=%d destination=%s part=%s", job.id, name, job.part)
        return
    if job.part == JobPart.DERIVED and not destination.send_metrics_reports:
        outgoing = [[item for item in series if not _is_report(item)] for series in outgoing]
    refusals: list[str] = []
    later: list[str] = []  # series the peer or our spool may complete on a retry
    started = time.perf_counter()
    try:
        if job.part == JobPart.DERIVED and any(outgoing):
            owed = _read(name, partial(originals_owed, db, job.series_uid, name))
            if owed is not None:  # after an outage: the originals go first, then these
                why = _wait_for_originals(settings, job, destination, owed)
                record(DeliveryStatus.FAILED, why)
                return
        # What the peer stored on an earlier attempt is not sent again (with Storage
        # Commitment, unless it reported failing it), nor what it confirmed keeping.
        already_stored, earlier = _already_stored(db, job.id, destination, outgoing)
        for series in outgoing:
            if destination.storage_commitment:
                series = _read(name, partial(uncommitted, db, job.id, destination, series))
            before = sum(item.sop_instance_uid in already_stored for item in series)
            series = [item for item in series if item.sop_instance_uid not in already_stored]
            if not series:
                continue
            try:
                report = send_series(job.id, destination, series, settings, stored_earlier=before)
                stored += report.stored
            except (UnreadableSpool, SeriesIncomplete) as exc:  # the next series still go
                stored += exc.stored
                later.append(str(exc))
            except ForwardError as exc:
                stored += exc.stored  # what went of the series before it failed
                if exc.transient:  # the peer will not take the rest now either: retry later
                    raise
                # A series it refuses for good (an SR to a PACS without the SOP class) does
                # not keep the others from it, as a refused instance does not keep the others.
                refusals.append(f"{exc}{_refused_report_hint(job, destination, series, exc)}")
        if later:
            raise ForwardError("; ".join(later + refusals), transient=True)
        if refusals:
            raise ForwardError("; ".join(refusals), transient=False)
        if destination.storage_commitment:
            confirm_commitment(job.id, destination, [i for s in outgoing for i in s], settings, db)
        STAGE_SECONDS.labels("forward", "").observe(time.perf_counter() - started)
    except ForwardError as exc:
        status = DeliveryStatus.FAILED if exc.transient else DeliveryStatus.DEAD
        # A failure to retry is told as a warning once, by the job's line (its error names
        # this destination's): here at INFO. One for good is a warning here too.
        log.log(
            logging.INFO if exc.transient else logging.WARNING,
            "delivery failed job=%d destination=%s transient=%s: %s",
            job.id,
            name,
            exc.transient,
            exc,
        )
        record(status, str(exc))
    except Exception as exc:
        log.exception("delivery crashed job=%d destination=%s", job.id, name)
        record(DeliveryStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}")
    else:
        record(DeliveryStatus.DONE, None)
        if job.part == JobPart.ORIGINALS:
            _wake_derived(db, job, name)


def _wake_derived(db: Database, job: JobRecord, name: str) -> None:
    """The series' derived job waiting for these originals at `name` is due now; should the
    database fail here, it goes at the end of its backoff instead."""
    try:
        wake_derived(db, job.series_uid, name)
    except Exception as exc:
        log.warning(
            "derived job not brought forward job=%d destination=%s: %s: %s",
            job.id,
            name,
            type(exc).__name__,
            exc,
        )


def _wait_for_originals(
    settings: Settings, job: JobRecord, destination: Destination, originals_job: int
) -> str:
    """Why the derived series do not go to `destination` now: none of their originals are
    there yet, and the cause, when the destination does not answer a C-ECHO. The originals
    keep their own backoff: a destination that answers may still refuse their stores (out of
    resources), and an attempt each time the derived job looked would spend their retries
    faster and give them up early. One that was down and answers again is found by the
    recovery probe, which brings them forward (`pipeline.recovery`); their arrival brings the
    derived job forward in turn."""
    waiting = waits_for_originals(originals_job, destination.name)
    log.info(
        "derived delivery deferred: the destination has none of the originals yet "
        "job=%d destination=%s originals_job=%d",
        job.id,
        destination.name,
        originals_job,
    )
    why = why_unanswered(destination, settings)
    if why is not None and why.transient:  # the cause first: a narrow `jobs list` shows it
        return f"{why}; {waiting}"
    return waiting


def _read(name: str, read: Callable[[], T]) -> T:
    """A read of what `name` has of the job; a database that is away fails the delivery for
    now (retried, in one line), not as an internal error with a traceback."""
    try:
        return read()
    except Exception as exc:
        said = database_away(exc)
        if said is None:
            raise
        raise ForwardError(
            f"the database could not say what {name} has already: {said}", transient=True
        ) from None


def _already_stored(
    db: Database, job_id: int, destination: Destination, outgoing: Outgoing
) -> tuple[set[str], int]:
    """What `destination` stored on an earlier attempt of the job while it was the same peer,
    and how many of `outgoing` that is; said in one line when there is any.

    With Storage Commitment, less what its latest report said it does not keep: what it stored
    and has not yet reported on is asked for again, not sent again (a PACS whose reports cannot
    reach the node got every series whole once an attempt, for days)."""

    def read() -> set[str]:
        stored = delivered_uids(db, job_id, destination.name, destination.peer)
        if destination.storage_commitment:
            stored -= failed_uids(db, job_id, destination.name)
        return stored

    stored = _read(destination.name, read)
    before = sum(item.sop_instance_uid in stored for series in outgoing for item in series)
    if before:
        total = sum(map(len, outgoing))
        log.info(
            "delivery goes on where the last attempt stopped job=%d destination=%s "
            "stored_before=%d to_send=%d",
            job_id,
            destination.name,
            before,
            total - before,
        )
    return stored, before


class _Pending:
    """One job's deliveries in flight: `finish` runs once, after the last of them; `abandon`
    instead when the node stops before they all started. `started` and `given_back` change
    under the queues' lock: a delivery either starts or its job is given back, never both."""

    def __init__(
        self, part: JobPart, count: int, finish: Callable[[], None], abandon: Callable[[], None]
    ) -> None:
        self.part = part
        self._left = count
        self.finish = finish
        self.abandon = abandon
        self.started = False  # a delivery of the job has begun
        self.given_back = False  # abandoned: its deliveries that have not begun never will
        self._lock = threading.Lock()

    def one_done(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left == 0


class DeliveryQueues:
    """The node's per-destination queues, shared by all its workers."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._executors: dict[str, ThreadPoolExecutor] = {}
        # Reentrant: cancelling a queued future runs its done callback (`_forget`) at once, in
        # the thread that cancels while it holds the lock.
        self._lock = threading.RLock()
        self._closed = False  # the node is stopping: a job handed over now goes back at once
        self._jobs_in_flight: Counter[JobPart] = Counter()
        self._abandoned: list[_Pending] = []  # jobs with a delivery that never started
        self._futures: dict[Future[None], _Pending] = {}
        self._stopping = threading.Event()  # set by shutdown: no more waiting out an outage

    def jobs_in_flight(self, part: JobPart) -> int:
        """Jobs of `part` handed over whose deliveries have not all returned (runners hold back
        above a limit, so a destination that is down cannot make the node take every job at
        once; counted per part, so waiting originals never hold back the enhancement)."""
        with self._lock:
            return self._jobs_in_flight[part]

    def submit(
        self,
        job: JobRecord,
        destinations: list[str],
        outgoing: Outgoing,
        finish: Callable[[], None],
        abandon: Callable[[], None],
    ) -> None:
        """Queue `outgoing` for each destination; `finish()` after the last delivery returns,
        or `abandon()` instead if the node stops before they could all start."""
        if not destinations:
            finish()
            return
        if not any(outgoing):
            # Nothing to send (QA held every derived series back): each delivery is recorded
            # done, nothing sent, here and now, without the network, even as the node stops:
            # the job is finished held, not given back to be taken up again at the next start.
            pending = _Pending(job.part, len(destinations), finish, abandon)
            with self._lock:
                self._jobs_in_flight[job.part] += 1
            for name in destinations:
                self._run(pending, job, name, outgoing)
            return
        with self._lock:
            if not self._closed:
                pending = _Pending(job.part, len(destinations), finish, abandon)
                self._jobs_in_flight[job.part] += 1
                for name in destinations:
                    future = self._executor(name).submit(self._run, pending, job, name, outgoing)
                    self._futures[future] = pending
                    future.add_done_callback(self._forget)
                return
        abandon()  # the node is stopping: none of it starts

    def close(self) -> None:
        """Start no more deliveries: those queued are cancelled and their jobs, none of whose
        deliveries began, go back to the queue now (and so does a job handed over from now
        on); the ones under way go on. First in the node's stop, before it waits for anything
        that a second signal or node.stop_timeout_seconds may cut short (a PACS that hangs):
        a job left to its lease would count that attempt as one its worker died in."""
        self._stopping.set()  # and a delivery waits out a database outage no longer
        with self._lock:
            self._closed = True
            for executor in self._executors.values():
                executor.shutdown(wait=False, cancel_futures=True)
        self._give_back(only_unstarted=True)

    def shutdown(self) -> None:
        """`close`, then let running deliveries end (bounded by the network timeouts); a job
        that had one running and one cancelled goes back then."""
        self.close()
        with self._lock:
            executors = list(self._executors.values())
        for executor in executors:  # every queue stopped first: the longest wait, not the sum
            executor.shutdown(wait=True)
        self._give_back(only_unstarted=False)

    def _give_back(self, *, only_unstarted: bool) -> None:
        """Queue again the jobs with a delivery the stop cancelled (`only_unstarted`: those with
        none running or done either, whose lease nothing else still uses)."""
        with self._lock:
            jobs = list({id(pending): pending for pending in self._abandoned}.values())
            if only_unstarted:
                jobs = [pending for pending in jobs if not pending.started]
            self._abandoned = [pending for pending in self._abandoned if pending not in jobs]
            for pending in jobs:
                pending.given_back = True
                self._jobs_in_flight[pending.part] -= 1
        for pending in jobs:
            try:
                pending.abandon()
            except Exception:
                log.exception("could not queue an abandoned job again")

    def _executor(self, name: str) -> ThreadPoolExecutor:
        with self._lock:
            if name not in self._executors:
                self._executors[name] = ThreadPoolExecutor(
                    max(1, self.settings.worker.workers), thread_name_prefix=f"deliver-{name}"
                )
            return self._executors[name]

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            pending = self._futures.pop(future, None)
            if future.cancelled() and pending is not None:
                self._abandoned.append(pending)

    def _run(self, pending: _Pending, job: JobRecord, name: str, outgoing: Outgoing) -> None:
        with self._lock:  # taken off the queue as the stop gave its job back: it never starts
            if pending.given_back:
                return
            pending.started = True
        try:
            # The job may have been cancelled, or claimed again, while this waited in the queue.
            owner = job.lease_owner
            if owner is not None and holds_lease(self.db, job.id, owner):
                deliver(self.settings, self.db, job, owner, name, outgoing, self._stopping)
            else:
                log.info("delivery skipped: job no longer held job=%d destination=%s", job.id, name)
        except Exception as exc:  # the row stays pending, which finish_attempt counts a failure
            if not self._database_away_at_stop("the delivery's outcome", job, exc):
                log_failure(
                    log, exc, "delivery outcome not recorded job=%d destination=%s", job.id, name
                )
        finally:
            if pending.one_done():
                with self._lock:
                    self._jobs_in_flight[job.part] -= 1
                try:
                    pending.finish()
                except Exception as exc:  # an executor would swallow it silently
                    if not self._database_away_at_stop("the attempt's end", job, exc):
                        log_failure(log, exc, "finishing the job failed job=%d", job.id)

    def _database_away_at_stop(self, what: str, job: JobRecord, exc: Exception) -> bool:
        """One line, no traceback, for a write the database was away for when the node stopped
        (the outage retry gave up because of the stop): expected, and the job resumes."""
        said = database_away(exc) if self._stopping.is_set() else None
        if said is not None:
            log.warning(
                "%s not recorded, the database being away as the node stops job=%d (the job "
                "resumes once its lease lapses): %s",
                what,
                job.id,
                said,
            )
        return said is not None
