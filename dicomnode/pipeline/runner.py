"""The job runner: claim a due job, check its inputs, enhance, deliver to every destination.

processing: the series is enhanced by each configured method into derived series and metrics
reports in the spool's outbox (`pipeline.enhancement`); forwarding: the originals (if configured),
then each derived series, then each report, one association per series per destination. A
failure anywhere leaves the inputs untouched and the job to the retry policy.
"""

import logging
from concurrent.futures import ThreadPoolExecutor

from dicomnode.config import Settings
from dicomnode.db import Database, DeliveryStatus, JobRecord, JobStatus, SpooledInstance
from dicomnode.db.jobs import (
    claim_next_job,
    finish_attempt,
    job_inputs,
    open_deliveries,
    record_delivery,
    record_job_details,
    set_active_status,
)
from dicomnode.errors import DicomNodeError, ForwardError
from dicomnode.forward import send_series
from dicomnode.pipeline.lease import LeaseKeeper
from dicomnode.spool import Spool

log = logging.getLogger(__name__)


class JobRunner:
    """Runs jobs for one worker identity (`owner`, written into each lease it takes)."""

    def __init__(self, settings: Settings, db: Database, spool: Spool, owner: str) -> None:
        self.settings = settings
        self.db = db
        self.spool = spool
        self.owner = owner

    def run_due_jobs(self) -> int:
        """Run jobs until none is due; return how many ran (the scheduler's worker tick)."""
        count = 0
        while job := claim_next_job(self.db, self.owner, self.settings.worker.lease_seconds):
            self.run(job)
            count += 1
        return count

    def run(self, job: JobRecord) -> None:
        log.info("job started job=%d series=%s attempt=%d", job.id, job.series_uid, job.attempts)
        with LeaseKeeper(self.db, job.id, self.owner, self.settings.worker.lease_seconds):
            try:
                self._run(job)
            except Exception as exc:
                log.exception("job failed with an internal error job=%d", job.id)
                self._finish(job, error=f"internal error: {type(exc).__name__}: {exc}")

    def _run(self, job: JobRecord) -> None:
        inputs = job_inputs(self.db, job.id)
        missing = [item.sop_instance_uid for item in inputs if not item.path.is_file()]
        if missing:
            self._finish(
                job,
                transient=False,
                error=(
                    f"{len(missing)} spooled input file(s) missing, e.g. sop={missing[0]}; "
                    "run `dicomnode jobs show` and check the spool"
                ),
            )
            return
        enhance = self.settings.enhance
        outgoing = [inputs] if enhance.forward_originals else []
        hold = None
        if enhance.methods:
            enhanced = self._enhance(job, inputs)
            if enhanced is None:
                return
            derived, unenhanced, hold = enhanced
            if hold is None:
                outgoing.extend(derived)
            else:  # held back: until released, nothing derived stands for any source image
                unenhanced = {item.sop_instance_uid for item in inputs}
        else:
            unenhanced = {item.sop_instance_uid for item in inputs}
        if not enhance.forward_originals and enhance.forward_unenhanced and unenhanced:
            # Nothing derived stands for these: the PACS gets them as they came, not nothing.
            outgoing.insert(0, [item for item in inputs if item.sop_instance_uid in unenhanced])
        if not set_active_status(self.db, job.id, self.owner, JobStatus.FORWARDING):
            return
        destinations = open_deliveries(self.db, job.id)
        if destinations:
            with ThreadPoolExecutor(len(destinations), thread_name_prefix="forward") as pool:
                list(pool.map(lambda name: self._deliver(job, name, outgoing), destinations))
        self._finish(job, hold=hold)

    def _enhance(
        self, job: JobRecord, inputs: list[SpooledInstance]
    ) -> tuple[list[list[SpooledInstance]], set[str], str | None] | None:
        """The derived series and reports, the SOP UIDs left unenhanced, and why QA holds the
        derived series back (None: send them).

        None when the job was finished here (enhancement failed, or QA failed it)."""
        from dicomnode.pipeline.enhancement import enhance_series, outbox_sink
        from dicomnode.pipeline.methods import configured_methods

        try:
            methods = configured_methods(self.settings)
            self.spool.clear_outbox(job.id)
            sink = outbox_sink(self.spool, job.id)
            output = enhance_series(job.id, inputs, self.settings, methods, sink)
        except DicomNodeError as exc:  # a missing model, a full disk: say so, keep the inputs
            self._finish(job, error=f"enhancement failed: {exc}")
            return None
        record_job_details(self.db, job.id, self.owner, output.details)
        if output.qa_failed and self.settings.enhance.qa_action == "fail":
            self._finish(
                job,
                transient=False,
                error="QA verdict 'fail' and enhance.qa_action = 'fail'; see `dicomnode jobs show`",
            )
            return None
        qa_action = self.settings.enhance.qa_action
        if output.qa_failed and qa_action == "hold" and not job.released:
            enhance = self.settings.enhance
            sent = enhance.forward_originals or enhance.forward_unenhanced
            reason = (
                f"QA verdict 'fail': {'originals sent, ' if sent else ''}derived series held; "
                f"`dicomnode jobs release {job.id}` sends them"
            )
            return output.series, output.unenhanced, reason
        return output.series, output.unenhanced, None

    def _deliver(self, job: JobRecord, name: str, outgoing: list[list[SpooledInstance]]) -> None:
        """One destination; its outcome goes to its own delivery row, whatever the others do."""
        destination = self.settings.destination(name)
        if destination is None:
            record_delivery(
                self.db,
                job.id,
                name,
                DeliveryStatus.DEAD,
                0,
                f"destination {name!r} is no longer configured",
            )
            return
        sent = 0
        try:
            for series in outgoing:
                sent += send_series(job.id, destination, series, self.settings).sent
        except ForwardError as exc:
            status = DeliveryStatus.FAILED if exc.transient else DeliveryStatus.DEAD
            log.warning(
                "delivery failed job=%d destination=%s transient=%s: %s",
                job.id,
                name,
                exc.transient,
                exc,
            )
            record_delivery(self.db, job.id, name, status, 0, str(exc))
        except Exception as exc:
            log.exception("delivery crashed job=%d destination=%s", job.id, name)
            record_delivery(
                self.db,
                job.id,
                name,
                DeliveryStatus.FAILED,
                0,
                f"internal error: {type(exc).__name__}: {exc}",
            )
        else:
            record_delivery(self.db, job.id, name, DeliveryStatus.DONE, sent, None)

    def _finish(
        self,
        job: JobRecord,
        error: str | None = None,
        transient: bool = True,
        hold: str | None = None,
    ) -> None:
        result = finish_attempt(
            self.db, job.id, self.owner, self.settings.retry, error, transient, hold
        )
        if result is None:
            return
        level = logging.INFO if result.status == JobStatus.DONE else logging.WARNING
        log.log(
            level,
            "job %s job=%d series=%s attempts=%d%s",
            result.status,
            result.id,
            result.series_uid,
            result.attempts,
            f" error={result.error}" if result.error else "",
        )
