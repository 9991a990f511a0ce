"""The metrics read at scrape time: jobs, queue and deliveries from the database, disk free.

A Prometheus custom collector: each scrape runs one read of the job tables (`db.stats`), so the
listener and every worker sharing the database report the same numbers, and nothing is kept in
memory between scrapes. A database that fails or does not answer in time gives
`dicomnode_database_up 0` and no job families for that scrape, never a failed scrape.
"""

import logging
from collections.abc import Iterator
from functools import partial

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dicomnode.config import EnhanceSettings
from dicomnode.db import Database
from dicomnode.db.failures import database_said
from dicomnode.db.stats import QueueSnapshot, queue_snapshot
from dicomnode.observe.bounded import BoundedCall
from dicomnode.observe.throttle import ThrottledWarnings
from dicomnode.registry import method_spec
from dicomnode.spool import Spool
from dicomnode.status import DeliveryStatus, JobPart, JobStatus

log = logging.getLogger(__name__)


def _job_families(snapshot: QueueSnapshot) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "dicomnode_jobs", "Jobs in the database by status and part.", labels=["status", "part"]
    )
    # Every state and part, zeros included, so a query never sees a series appear from nowhere.
    for status in JobStatus:
        for part in JobPart:
            jobs.add_metric([status, part], snapshot.jobs.get((status, part), 0))
    yield jobs
    yield GaugeMetricFamily(
        "dicomnode_jobs_queued", "Jobs waiting to be claimed.", value=snapshot.queued
    )
    yield GaugeMetricFamily(
        "dicomnode_jobs_oldest_queued_age_seconds",
        "How long the oldest queued job has waited (0: none queued).",
        value=snapshot.oldest_queued_age_seconds,
    )
    deliveries = GaugeMetricFamily(
        "dicomnode_deliveries",
        "Deliveries in the database by destination and outcome (pending, done, failed, dead).",
        labels=["destination", "status"],
    )
    destinations = sorted({destination for destination, _ in snapshot.deliveries})
    for destination in destinations:
        for outcome in DeliveryStatus:
            deliveries.add_metric(
                [destination, outcome], snapshot.deliveries.get((destination, outcome), 0)
            )
    yield deliveries
    awaited = GaugeMetricFamily(
        "dicomnode_commitments_awaited",
        "Instances whose Storage Commitment report a delivery in progress awaits.",
        labels=["destination"],
    )
    for destination, count in sorted(snapshot.commitments_awaited.items()):
        awaited.add_metric([destination], count)
    yield awaited


class NodeCollector(Collector):
    """Reads the shared state of a node (database, spool's disk) when Prometheus scrapes."""

    def __init__(self, db: Database, spool: Spool, timeout_seconds: float) -> None:
        self.spool = spool
        self._warnings = ThrottledWarnings(log)  # a scrape every 15 s while the database hangs
        self._snapshot = BoundedCall(partial(queue_snapshot, db), timeout_seconds, "metrics read")

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot: QueueSnapshot | None = self._snapshot()
        except Exception as exc:  # a driver error or a timeout: a value, not a failed scrape
            said = database_said(exc) or exc  # the database's first line, not SQLAlchemy's text
            self._warnings.warning("tables", "metrics: job tables not read: %s", said)
            snapshot = None
        yield GaugeMetricFamily(
            "dicomnode_database_up",
            "1 if the job tables could be read for this scrape, else 0.",
            value=1 if snapshot is not None else 0,
        )
        if snapshot is not None:
            yield from _job_families(snapshot)
        try:
            free = float(self.spool.free_bytes())
        except OSError as exc:
            log.warning("metrics: free space of %s unknown: %s", self.spool.root, exc)
            return
        yield GaugeMetricFamily(
            "dicomnode_disk_free_bytes", "Free bytes on the filesystem of the spool.", value=free
        )


class ConfiguredModels(Collector):
    """The model file each configured method would use per enabled modality (known at start,
    before any job ran; `dicomnode_model_info` says what a job actually ran with)."""

    def __init__(self, enhance: EnhanceSettings) -> None:
        self.enhance = enhance

    def collect(self) -> Iterator[Metric]:
        family = InfoMetricFamily(
            "dicomnode_configured_model",
            "The model file a configured method uses for an enabled modality.",
            labels=["method", "modality"],
        )
        for name in self.enhance.methods:
            spec = method_spec(name)
            if spec.model_prefix is None:
                continue
            for modality in self.enhance.modalities:
                path = spec.model_for(self.enhance, modality)
                family.add_metric(
                    [name, modality], {"file": path.name, "present": str(path.is_file()).lower()}
                )
        yield family
