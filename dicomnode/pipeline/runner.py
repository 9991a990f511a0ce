"""The job runner: claim a due job, check its inputs, deliver it to every open destination.

Later issues add the enhancement steps between the input check and the deliveries; the state
machine around them stays the same.
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
    set_active_status,
)
from dicomnode.errors import ForwardError
from dicomnode.forward import send_series
from dicomnode.pipeline.lease import LeaseKeeper

log = logging.getLogger(__name__)


class JobRunner:
    """Runs jobs for one worker identity (`owner`, written into each lease it takes)."""

    def __init__(self, settings: Settings, db: Database, owner: str) -> None:
        self.settings = settings
        self.db = db
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
        if not set_active_status(self.db, job.id, self.owner, JobStatus.FORWARDING):
            return
        destinations = open_deliveries(self.db, job.id)
        if destinations:
            with ThreadPoolExecutor(len(destinations), thread_name_prefix="forward") as pool:
                list(pool.map(lambda name: self._deliver(job, name, inputs), destinations))
        self._finish(job)

    def _deliver(self, job: JobRecord, name: str, inputs: list[SpooledInstance]) -> None:
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
        try:
            report = send_series(job.id, destination, inputs, self.settings)
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
            record_delivery(self.db, job.id, name, DeliveryStatus.DONE, report.sent, None)

    def _finish(self, job: JobRecord, error: str | None = None, transient: bool = True) -> None:
        result = finish_attempt(self.db, job.id, self.owner, self.settings.retry, error, transient)
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
