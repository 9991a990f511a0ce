"""The job runner: claim a due job, check its inputs, enhance, hand it to the delivery queues.

A series has up to two jobs, one per part, each claimed by its own runners: an originals job
(the instances as received, at once to every destination that takes them: a router's work,
never behind an enhancement) and a derived job. processing: the derived job's series is
enhanced by each configured method into derived series and metrics reports in the spool's
outbox (`pipeline.enhancement`); forwarding: each series, one association per series, in each
destination's own queue (`pipeline.delivery`), while the runner goes on to the next job. A
failure anywhere leaves the inputs untouched and the job to the retry policy.
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from dicomnode.config import Settings
from dicomnode.db import Database, JobRecord, JobStatus, SpooledInstance
from dicomnode.db.delivered import forget_stored
from dicomnode.db.failures import database_away, database_said
from dicomnode.db.jobs import (
    NOTHING_MADE,
    claim_next_job,
    finish_attempt,
    job_inputs,
    open_deliveries,
    originals_in_flight,
    record_job_details,
    record_job_outputs,
    reports_made_before,
    requeue_unstarted,
    set_active_status,
)
from dicomnode.errors import DicomNodeError, SpoolError
from dicomnode.observe.counters import ENHANCEMENTS_FAILED, METHOD_STAGES, MODEL, STAGE_SECONDS
from dicomnode.pipeline.delivery import DeliveryQueues
from dicomnode.pipeline.lease import LeaseKeeper
from dicomnode.pipeline.outage import through_outage
from dicomnode.pipeline.replay import made_whole, replay_outgoing
from dicomnode.spool import Spool
from dicomnode.status import JobPart, Replay
from dicomnode.warning_subject import about

if TYPE_CHECKING:  # the imaging layer is imported only when a job enhances (see _enhance)
    from dicomnode.imaging.outcome import SeriesOutcome
    from dicomnode.pipeline.enhancement import LoadedSeries

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a derived job's enhancement gives: the series to send, the SOP UIDs left unenhanced, why
# QA holds derived series back (None: send them) and the series it holds.
_Enhanced = tuple[list[list[SpooledInstance]], set[str], str | None, list[list[SpooledInstance]]]

MAX_JOBS_FORWARDING_PER_WORKER = 20
# What a job that sends again from its outbox sends, and why (the admin's command).
_WHY_SENT_AGAIN = {
    Replay.HELD: "what QA held back (jobs release)",
    Replay.SENT: "what it delivered before (jobs resend)",
}


def observe_outcome(outcome: "SeriesOutcome") -> None:
    """Count one enhancement in the metrics: its stage durations, the model and device used."""
    STAGE_SECONDS.labels("load", "").observe(outcome.load_s)
    for method in outcome.methods:
        for field, stage in METHOD_STAGES.items():
            STAGE_SECONDS.labels(stage, method.method).observe(getattr(method.timings, field))
        MODEL.labels(method.method).info({"version": method.version, "device": method.device})


def _flat(series: "Iterable[list[list[SpooledInstance]]]") -> list[list[SpooledInstance]]:
    return [one for method in series for one in method]


class JobRunner:
    """Runs jobs of one part for one worker identity (`owner`, the prefix of each lease)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        spool: Spool,
        owner: str,
        deliveries: DeliveryQueues,
        part: JobPart,
        stopping: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.spool = spool
        self.owner = owner
        self.deliveries = deliveries
        self.part = part
        # Jobs of this part still forwarding that may wait in the delivery queues before the
        # runners stop taking new ones (a destination that is down must not pull in every job).
        # A router in a process without enhancement workers (`workers = 0`) counts as one.
        self.max_jobs_forwarding = MAX_JOBS_FORWARDING_PER_WORKER * max(1, settings.worker.workers)
        # Set when the node stops: the job in hand is finished, no other one is taken.
        self.stopping = stopping or threading.Event()
        self.current_job: int | None = None  # the job this runner is processing now
        self._woken = threading.Event()  # a job was made while a tick was under way

    def run_due_jobs(self) -> int:
        """Run jobs until none is due; return how many ran (the scheduler's worker tick). When
        `wake` was called meanwhile (a job was made), look once more before returning."""
        count = 0
        lease_seconds = self.settings.worker.lease_seconds
        while True:
            self._woken.clear()
            while (
                not self.stopping.is_set()
                and self.deliveries.jobs_in_flight(self.part) < self.max_jobs_forwarding
            ):
                # A spool away (a disk unmounted) raises SpoolError, which the scheduled task
                # logs: no job is taken then, so none spends its attempts on the outage (after
                # MAX_PROCESSING_ATTEMPTS, about an hour, they were dead).
                self.spool.check_identity_kept()
                job = claim_next_job(self.db, self._lease_token(), lease_seconds, self.part)
                if job is None:
                    break
                self.current_job = job.id
                try:
                    self.run(job)
                finally:
                    self.current_job = None
                count += 1
            if not self._woken.is_set() or self.stopping.is_set():
                return count

    def wake(self) -> None:
        """A job was made: a tick under way looks again before it returns (the scheduler runs
        no second one beside it)."""
        self._woken.set()

    def _lease_token(self) -> str:
        """This worker plus a nonce: each claim is its own lease, so a job claimed again (retried
        by an admin, or reclaimed) is never mistaken for the attempt still in a delivery queue."""
        return f"{self.owner}:{secrets.token_hex(4)}"

    @staticmethod
    def _token(job: JobRecord) -> str:
        assert job.lease_owner is not None, "a claimed job has a lease"
        return job.lease_owner

    def run(self, job: JobRecord) -> None:
        """Process the job, then hand its deliveries to the queues; the lease is kept until the
        last delivery returns and the job is finished."""
        log.info(
            "job started job=%d part=%s series=%s attempt=%d",
            job.id,
            job.part,
            job.series_uid,
            job.attempts,
        )
        lease = LeaseKeeper(self.db, job.id, self._token(job), self.settings.worker.lease_seconds)
        lease.start()
        handed_over = False
        try:
            with about(f"job={job.id}"):  # a library's warning meanwhile names the job
                handed_over = self._run(job, lease)
        except Exception as exc:
            away = database_away(exc)  # an outage, told once by the node: no traceback
            if away is None:
                log.exception("job failed with an internal error job=%d", job.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            self._finish(job, error=error if away is None else f"the database failed: {away}")
        finally:
            if not handed_over:
                lease.stop()

    def _run(self, job: JobRecord, lease: LeaseKeeper) -> bool:
        """True when the job went to the delivery queues (which finish it), else finished here."""
        inputs = job_inputs(self.db, job.id)
        missing = [item.sop_instance_uid for item in inputs if not item.path.is_file()]
        if missing:
            try:
                self.spool.check_identity_kept()
            except SpoolError as exc:  # the whole spool is away, not its files: retried
                self._finish(job, error=str(exc))
                return False
            self._finish(
                job,
                transient=False,
                error=(
                    f"{len(missing)} spooled input file(s) missing, e.g. sop={missing[0]}; "
                    "run `dicomnode jobs show` and check the spool"
                ),
            )
            return False
        waiting = open_deliveries(self.db, job.id)  # the destinations still to reach
        if not self._sent_anywhere(job, waiting):  # each ends "not sent" (`delivery.deliver`)
            outgoing, hold = [], None
            log.info(
                "job goes nowhere now: its destinations no longer take it, or the running node "
                "does not know them job=%d",
                job.id,
            )
            if job.part == JobPart.DERIVED:  # a resend to one that takes it enhances it then
                record_job_outputs(self.db, job.id, self._token(job), {NOTHING_MADE: True})
        elif job.replay is not None:  # a release or resend: send again what the outbox holds
            try:
                outgoing = replay_outgoing(
                    job.id, job.part, Replay(job.replay), job.outputs, inputs, self.spool
                )
            except SpoolError as exc:
                self._finish(job, transient=False, error=str(exc))
                return False
            hold = None
            if job.part == JobPart.DERIVED:  # a retried release: its originals may be retried too
                self._give_the_originals_a_head_start(job)
            log.info(
                "job sends again %s job=%d part=%s series=%s outgoing_series=%d",
                _WHY_SENT_AGAIN[Replay(job.replay)],
                job.id,
                job.part,
                job.series_uid,
                len(outgoing),
            )
        elif job.part == JobPart.ORIGINALS:
            outgoing, hold = [inputs], None
        elif (made := self._made_before(job, inputs)) is not None:
            outgoing, hold = made
            # Nothing to enhance, so no head start by the way: an admin's `jobs retry --status
            # failed` after an outage queues both jobs at once, and this one was quicker.
            self._give_the_originals_a_head_start(job)
        else:
            derived = self._derived_outgoing(job, inputs)
            if derived is None:
                return False
            outgoing, hold = derived
            if job.attempts > 1:  # made anew: what an earlier attempt's images were stored as
                forget_stored(self.db, job.id)  # is no reason to withhold these
        if not set_active_status(self.db, job.id, self._token(job), JobStatus.FORWARDING):
            return False

        def finish() -> None:
            lease.stop()
            self._finish(job, hold=hold)

        def abandon() -> None:
            lease.stop()
            requeue_unstarted(self.db, job.id, self._token(job))

        self.deliveries.submit(job, waiting, outgoing, finish, abandon)
        return True

    def _sent_anywhere(self, job: JobRecord, waiting: list[str]) -> bool:
        """Whether a destination the job still has to reach (`waiting`) takes its part now:
        one whose `send` changed since the job was made does not, nor one the running node
        does not know (its delivery ends dead, "not in the running node's settings"; a retry
        after the restart that adds it enhances the series then). A derived series made for
        none would be a worker's minutes for nothing, with a model that the node need not
        have loaded (`Node._makes_derived`)."""
        destinations = [self.settings.destination(name) for name in waiting]
        return not waiting or any(d is not None and job.part in d.send for d in destinations)

    def _made_before(
        self, job: JobRecord, inputs: list[SpooledInstance]
    ) -> tuple[list[list[SpooledInstance]], str | None] | None:
        """What an earlier attempt of this derived job made and recorded, when it can go as it
        is, and why QA held part of it back (None: nothing held): that attempt was enhanced,
        then its deliveries failed (a destination down) or the node stopped before they began,
        so this one sends the same derived series instead of enhancing the series again
        (minutes of a worker per attempt while a PACS is down, for the same result); what QA
        held stays held, for the same reason. An attempt of a version before the outbox had a
        folder per attempt (2026-12-02) recorded its series without one: they are in the job's
        own folder, and go as they are too (enhanced again, they would get the new version's
        UIDs beside those a PACS may already hold part of). None, and the series is enhanced
        anew, when nothing was recorded, when a hold was recorded without its reason (a version
        before the reason was kept), or when its files are gone (held ones included)."""
        outputs = job.outputs or {}
        attempt = outputs.get("outbox")  # None: an earlier version's, in the job's own folder
        if not (attempt or outputs.get("series")):
            return None
        held, hold = outputs.get("held") or [], outputs.get("hold")
        if job.released:  # an admin released what QA held: it goes with the rest
            held, hold = [], None
        if held and not hold:
            return None
        kept = self.spool.outbox_series(job.id, attempt)
        if attempt is None and not made_whole(job.details, kept):
            log.info("job enhances again job=%d: an earlier version's outbox is not whole", job.id)
            return None
        if not all(kept.get(uid) for uid in held):  # a release would have nothing to send
            log.info("job enhances again job=%d: a held series is gone from the outbox", job.id)
            return None
        sent = {**outputs, "series": [uid for uid in outputs.get("series", []) if uid not in held]}
        try:
            made = replay_outgoing(job.id, job.part, Replay.SENT, sent, inputs, self.spool)
        except SpoolError as exc:
            log.info("job enhances again job=%d: %s", job.id, exc)
            return None
        log.info(
            "job sends what an earlier attempt made job=%d series=%s outbox=%s",
            job.id,
            job.series_uid,
            attempt or "(the job's own folder: an earlier version's)",
        )
        return made, hold

    def _load_during_the_head_start(
        self, job: JobRecord, inputs: list[SpooledInstance]
    ) -> "LoadedSeries":
        """The series read and decoded while its originals have their head start (one thread:
        a core for a second or two for 300 uncompressed CT slices fresh in the page cache,
        longer for a compressed series), then the self-check prepared and the sources measured
        until the head start ends (`LoadedSeries.measure_ahead`: two threads)."""
        from dicomnode.imaging.outcome import TOO_LARGE
        from dicomnode.pipeline.enhancement import LoadedSeries, first_declined, load_series

        head_start_over = threading.Event()

        def load() -> LoadedSeries:
            loaded = load_series(inputs, self.settings)
            if loaded.not_enhanced:  # a modality not enabled, or a series too large to hold
                log.log(
                    logging.WARNING if loaded.not_enhanced.startswith(TOO_LARGE) else logging.INFO,
                    "series not enhanced job=%d series=%s: %s",
                    job.id,
                    job.series_uid,
                    loaded.not_enhanced,
                )
                return loaded
            log.info(
                "series loaded job=%d series=%s images=%d declined=%d seconds=%.1f",
                job.id,
                job.series_uid,
                len(loaded.images),
                len(loaded.declined),
                loaded.seconds,
            )
            if loaded.declined and not loaded.images:  # nothing to enhance: say why here
                log.warning(
                    "no image of the series could be read for enhancement job=%d series=%s: %s",
                    job.id,
                    job.series_uid,
                    first_declined(loaded.declined, job.id),
                )
            try:
                measured = loaded.measure_ahead(self.settings, until=head_start_over)
            except Exception:  # e.g. no thread to start: the job measures it all itself
                log.debug("nothing measured ahead job=%d", job.id, exc_info=True)
                return loaded
            if measured:
                log.info(
                    "sources measured ahead job=%d series=%s images=%d",
                    job.id,
                    job.series_uid,
                    measured,
                )
            return loaded

        with ThreadPoolExecutor(1, thread_name_prefix=f"load-{job.id}") as pool:
            loading = pool.submit(load)
            try:
                self._give_the_originals_a_head_start(job)
            finally:
                head_start_over.set()
            return loading.result()

    def _give_the_originals_a_head_start(self, job: JobRecord) -> None:
        """Wait, up to worker.originals_head_start_seconds, while the series' originals are
        queued or being sent: on a small machine the enhancement (TensorFlow on every core)
        would take the cores that sending them needs, and the originals are what a radiologist
        waits for. What runs meanwhile (`_load_during_the_head_start`) takes less: sending
        waits mostly on the peer."""
        limit = self.settings.worker.originals_head_start_seconds
        started = time.monotonic()
        while (
            time.monotonic() - started < limit
            and not self.stopping.is_set()
            and originals_in_flight(self.db, job.series_uid)
        ):
            self.stopping.wait(min(0.2, limit))
        waited = time.monotonic() - started
        if waited >= 0.1:
            log.info(
                "job waited for the originals job=%d series=%s seconds=%.1f%s",
                job.id,
                job.series_uid,
                waited,
                " (worker.originals_head_start_seconds)" if waited >= limit else "",
            )

    def _derived_outgoing(
        self, job: JobRecord, inputs: list[SpooledInstance]
    ) -> tuple[list[list[SpooledInstance]], str | None] | None:
        """What a derived job sends, and why QA holds the derived series back (None: send).

        With originals off, the source images nothing derived stands for go too, as they came:
        the PACS gets them, not nothing; the whole series when the enhancement fails. None when
        the job was finished here, or is no longer this attempt's (its lease lapsed and another
        attempt took it)."""
        attempt = self.spool.outbox_attempt(job.claims, self._token(job))
        try:
            loaded = self._load_during_the_head_start(job, inputs)
            enhanced = self._enhance(job, inputs, loaded, attempt)
        except Exception as exc:  # a missing model, a full disk, a bug: say so, keep the inputs
            self.spool.clear_outbox_attempt(job.id, attempt)
            enhanced = self._failed_enhancement(job, inputs, exc)
        if enhanced is None:
            return None
        outgoing, unenhanced, hold, held = enhanced
        series_of = self.spool.series_uid_of
        record: dict[str, str | list[str] | None] = {
            "outbox": attempt,
            "series": [series_of(series[0].path) for series in outgoing + held if series],
            "held": [series_of(series[0].path) for series in held if series],
            "hold": hold,  # why: the next attempt holds them for the same reason
            "unenhanced": [],
        }
        enhance = self.settings.enhance
        if not enhance.forward_originals and enhance.forward_unenhanced and unenhanced:
            outgoing.insert(0, [item for item in inputs if item.sop_instance_uid in unenhanced])
            record["unenhanced"] = [item.sop_instance_uid for item in outgoing[0]]
        # What a later `jobs release` or `jobs resend` sends again (pipeline.replay).
        if not record_job_outputs(self.db, job.id, self._token(job), record):
            # Our lease lapsed (the worker was paused) and the job is another attempt's now:
            # what we made goes, and what that attempt makes is left alone.
            self.spool.clear_outbox_attempt(job.id, attempt)
            log.warning(
                "job no longer held, its outputs discarded job=%d series=%s outbox=%s",
                job.id,
                job.series_uid,
                attempt,
            )
            return None
        self.spool.clear_outbox_before(job.id, attempt)  # what a paused attempt left meanwhile
        return outgoing, hold

    def _enhance(
        self, job: JobRecord, inputs: list[SpooledInstance], loaded: "LoadedSeries", attempt: str
    ) -> "_Enhanced | None":
        """The derived series and reports to send, the SOP UIDs left unenhanced, why QA holds
        derived series back (None: send them) and the series it holds; their files are in the
        outbox folder `attempt`, this attempt's own.

        None when the job was finished here (QA failed it); an enhancement that fails raises."""
        from dicomnode.pipeline.derived_output import outbox_sink
        from dicomnode.pipeline.enhancement import enhance_series
        from dicomnode.pipeline.methods import methods_for

        self.spool.clear_outbox_before(job.id, attempt)  # earlier attempts' outputs
        sink = outbox_sink(self.spool, job.id, attempt)
        methods = methods_for(self.settings)
        # A database away here fails the attempt for now, as any read of the job would: a
        # report made without them would keep its UID, and its retries the file.
        earlier = reports_made_before(self.db, job.series_uid, job.id)
        output = enhance_series(job.id, inputs, self.settings, methods, sink, loaded, earlier)
        self._record_details(job, output.outcome.as_dict())
        observe_outcome(output.outcome)
        qa = self.settings.qa
        harmful = {
            method.method: reasons
            for method in output.outcome.methods
            if (reasons := method.harm(qa.self_check_mean_min_db, qa.self_check_image_min_db))
        }
        for name, reasons in harmful.items():
            log.warning(
                "derived series not trusted job=%d method=%s series=%s qa_action=%s: %s",
                job.id,
                name,
                job.series_uid,
                self.settings.enhance.qa_action,
                "; ".join(reasons),
            )
        why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in harmful.items())
        qa_action = self.settings.enhance.qa_action
        if harmful and qa_action == "fail":
            self._finish(
                job,
                transient=False,
                error=f"{why}; enhance.qa_action = 'fail'; see `dicomnode jobs show`",
            )
            return None
        if not harmful or qa_action == "flag" or job.released:
            return _flat(output.by_method.values()), output.unenhanced, None, []
        # Do no harm: the series of a method that would make things worse waits for an admin.
        sent = [series for name, series in output.by_method.items() if name not in harmful]
        held = [series for name, series in output.by_method.items() if name in harmful]
        unenhanced = output.unenhanced
        if not sent:  # until released, nothing derived stands for any source image
            unenhanced = {item.sop_instance_uid for item in inputs}
        reason = f"{why}: derived series held; `dicomnode jobs release {job.id}` sends them"
        return _flat(sent), unenhanced, reason, _flat(held)

    def _failed_enhancement(
        self, job: JobRecord, inputs: list[SpooledInstance], error: Exception
    ) -> "_Enhanced | None":
        """After the enhancement failed: with originals off (and `forward_unenhanced`), the
        series goes as it came and the job ends done, the reason in its details (and counted in
        `dicomnode_enhancements_failed_total`), so that the PACS never waits on a failing
        enhancement for its images; otherwise, or when the database failed, the job fails and
        is retried (its originals went on their own)."""
        from dicomnode.imaging.outcome import SeriesOutcome

        away = database_away(error)
        if away is not None:
            # Not the enhancement's failure: the database's (locked, gone), which passes. The
            # job is retried, and the outage is told once by the node (`guarded.py`).
            self._finish(job, error=f"the database failed: {away}")
            return None
        if isinstance(error, DicomNodeError):
            reason = f"enhancement failed: {error}"
        else:
            reason = f"internal error: {type(error).__name__}: {error}"
            log.error("enhancement failed with an internal error job=%d", job.id, exc_info=error)
        ENHANCEMENTS_FAILED.inc()
        enhance = self.settings.enhance
        # Any other failure of the database's (a constraint, a missing column) keeps its
        # traceback, but the job is retried, not sent on as received.
        passing = database_said(error) is not None
        if enhance.forward_originals or not enhance.forward_unenhanced or passing:
            self._finish(job, error=reason)
            return None
        log.warning(
            "series sent as received job=%d series=%s (enhance.forward_originals = false): %s",
            job.id,
            job.series_uid,
            reason,
        )
        outcome = SeriesOutcome(f"skipped: {reason}; the series went as received")
        self._record_details(job, outcome.as_dict())
        return [], {item.sop_instance_uid for item in inputs}, None, []

    def _record_details(self, job: JobRecord, details: dict[str, Any]) -> None:
        """The enhancement's outcome in the job's row, written through a short database outage
        as the attempt's end is: given up, the series was enhanced again at the next attempt."""
        self._through_outage(
            "the enhancement's details",
            job,
            lambda: record_job_details(self.db, job.id, self._token(job), details),
        )

    def _through_outage(self, what: str, job: JobRecord, write: Callable[[], T]) -> T:
        """`write()`, tried again through a database outage for up to half the lease
        (`pipeline/outage.py`), or until the node stops."""
        return through_outage(
            what,
            job.id,
            write,
            patience=self.settings.worker.lease_seconds / 2,
            stopping=self.stopping,
        )

    def _finish(
        self,
        job: JobRecord,
        error: str | None = None,
        transient: bool = True,
        hold: str | None = None,
    ) -> None:
        result = self._through_outage(
            "the attempt's end",
            job,
            lambda: finish_attempt(
                self.db,
                job.id,
                self._token(job),
                self.settings.retry,
                error,
                transient,
                hold,
                receive_only=self.settings.node.receive_only,
            ),
        )
        if result is None:
            return
        # An attempt given back (`Transition.spent`) only waited for its originals: no failure,
        # and not called one (its state is `failed`, its error says why it waits).
        waited = result.attempts < job.attempts
        done = result.status == JobStatus.DONE
        level = logging.INFO if done or waited else logging.WARNING
        log.log(
            level,
            "job %s job=%d series=%s attempts=%d%s",
            "waits for its originals" if waited else result.status,
            result.id,
            result.series_uid,
            result.attempts,
            f" error={result.error}" if result.error else "",
        )
