"""What this process counts as it works: instances in, refusals, stage durations, models run.

The receiver and the pipeline import these and count in memory (cheap, no I/O); the HTTP endpoint
(`observe.endpoint`) exposes them with what it reads from the database at scrape time. Nothing
here imports the imaging layer or TensorFlow, so the receiver may import it.
The metrics are created unregistered: each endpoint registers them in its own registry.
"""

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.registry import Collector

# The `_created` timestamp series double every counter's output and no query here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

# The `reason` labels, every one exported from the start (at 0) so that rate() sees the first.
REFUSAL_REASONS = (
    "cannot_decode",
    "data_set_mismatch",
    "sop_class_not_supported",
    "uid_collision",
    "too_large",
    "disk_full",
    "timed_out",
    "spool",
    "database",
    "internal",
)
REJECTION_REASONS = (
    "called_aet_unknown",
    "calling_aet_not_allowed",
    "too_many_associations",
    "other",
)
CONNECTION_REASONS = (
    "per_address_cap",
    "screening_cap",
    "silent_cap",
    "pdu_too_large",
    "message_too_large",
    "stalled",
    "protocol",
    "not_dicom",
)

HTTP_REFUSAL_REASONS = ("per_address_cap", "total_cap")

INSTANCES_RECEIVED = Counter(
    "dicomnode_instances_received",
    "Instances stored and answered Success (C-STORE).",
    registry=None,
)
BYTES_RECEIVED = Counter(
    "dicomnode_received_bytes",
    "Bytes of the instances stored, as they came over the network.",
    registry=None,
)
INSTANCES_REFUSED = Counter(
    "dicomnode_instances_refused",
    "C-STORE requests answered with a failure status, by reason.",
    ["reason"],
    registry=None,
)
ASSOCIATIONS_REJECTED = Counter(
    "dicomnode_associations_rejected",
    "Associations refused (A-ASSOCIATE-RJ), by reason.",
    ["reason"],
    registry=None,
)
CONNECTIONS_ABORTED = Counter(
    "dicomnode_connections_aborted",
    "Inbound connections closed for breaking a limit (receive/guard.py), by reason.",
    ["reason"],
    registry=None,
)
for _reason in CONNECTION_REASONS:
    CONNECTIONS_ABORTED.labels(_reason)
# A destination's (or a Storage Commitment caller's) answer that broke a limit on an association
# the node requested (dicom/requestor.py): the peer misbehaves, or is not what it claims to be.
ANSWER_REASONS = ("pdu_too_large", "message_too_large", "stalled", "protocol")
ANSWERS_ABORTED = Counter(
    "dicomnode_answers_aborted",
    "Associations the node requested, aborted for an answer that broke a limit, by reason.",
    ["reason"],
    registry=None,
)
for _reason in ANSWER_REASONS:
    ANSWERS_ABORTED.labels(_reason)
for _reason in REFUSAL_REASONS:
    INSTANCES_REFUSED.labels(_reason)
for _reason in REJECTION_REASONS:
    ASSOCIATIONS_REJECTED.labels(_reason)

# What became of an instance sent by C-STORE (forward/tally.py SeriesTally.outcomes).
FORWARD_OUTCOMES = (
    "stored",
    "warning",
    "refused",
    "deferred",
    "broken_off",
    "unreadable",
    "unsendable",
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "dicomnode_http_connections_refused",
    "Connections to the HTTP endpoint closed at once for want of a slot ([http]), by reason.",
    ["reason"],
    registry=None,
)
for _reason in HTTP_REFUSAL_REASONS:
    HTTP_CONNECTIONS_REFUSED.labels(_reason)

INSTANCES_FORWARDED = Counter(
    "dicomnode_instances_forwarded",
    "Instances sent by C-STORE, by destination and what became of them.",
    ["destination", "outcome"],
    registry=None,
)


def forwarding_to(destinations: Iterable[str]) -> None:
    """Export every outcome of each configured destination from the start (at 0)."""
    for name in destinations:
        for outcome in FORWARD_OUTCOMES:
            INSTANCES_FORWARDED.labels(name, outcome)


ENHANCEMENTS_FAILED = Counter(
    "dicomnode_enhancements_failed",
    "Enhancement attempts of derived jobs that failed (an error, not a declined image).",
    registry=None,
)
ENHANCEMENT_WAITING = Gauge(
    "dicomnode_enhancement_waiting",
    "1 while this process's models do not load (the log says why, and what its derived jobs "
    "do meanwhile).",
    registry=None,
)

# Seconds, from a small image on a CPU to a large series forwarded over a slow link.
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STAGE_SECONDS = Histogram(
    "dicomnode_stage_seconds",
    "Seconds per stage of a job: load (the series), infer, measure, write (per method), "
    "forward (one job's series to one destination).",
    ["stage", "method"],
    buckets=_STAGE_BUCKETS,
    registry=None,
)
MODEL = Info(
    "dicomnode_model",
    "The model version and device each method last ran with in this process.",
    ["method"],
    registry=None,
)

# The stages of a method's StageTimings (imaging.outcome) under the names the metric uses.
METHOD_STAGES = {"enhance_s": "infer", "measure_s": "measure", "write_s": "write"}


def in_process_metrics() -> list[Collector]:
    """Every metric above, to register in an endpoint's registry."""
    return [
        INSTANCES_RECEIVED,
        BYTES_RECEIVED,
        INSTANCES_REFUSED,
        ASSOCIATIONS_REJECTED,
        CONNECTIONS_ABORTED,
        ANSWERS_ABORTED,
        HTTP_CONNECTIONS_REFUSED,
        INSTANCES_FORWARDED,
        ENHANCEMENTS_FAILED,
        ENHANCEMENT_WAITING,
        STAGE_SECONDS,
        MODEL,
    ]


# The counters a receiver process (receive/processes.py) reports to the node, which adds them
# to its own: /metrics then counts what every listener process received.
RECEIVER_COUNTERS = (
    INSTANCES_RECEIVED,
    BYTES_RECEIVED,
    INSTANCES_REFUSED,
    ASSOCIATIONS_REJECTED,
    CONNECTIONS_ABORTED,
)
CounterTotals = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def receiver_totals() -> CounterTotals:
    """This process's totals of RECEIVER_COUNTERS, by (metric name, labels)."""
    totals: CounterTotals = {}
    for counter in RECEIVER_COUNTERS:
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = (metric.name, tuple(sorted(sample.labels.items())))
                    totals[key] = sample.value
    return totals


def add_receiver_totals(now: CounterTotals, before: CounterTotals) -> None:
    """Add what another process counted between two of its `receiver_totals()` to ours."""
    by_name = {counter._name: counter for counter in RECEIVER_COUNTERS}
    for (name, labels), value in now.items():
        delta = value - before.get((name, labels), 0.0)
        counter = by_name.get(name)
        if counter is None or delta <= 0:
            continue
        (counter.labels(**dict(labels)) if labels else counter).inc(delta)
