"""Retention on a database a site fills in months, and what it costs the stores meanwhile.

A SQLite database is filled with `--series` delivered series (an originals and a derived job
each, `--instances` instance rows per series, all finished 60 days ago, plus the deliveries) the
way the node's own tables hold them. Then an instance row is recorded every 50 ms, as the
receiver does for a C-STORE, first with nothing else running (idle), then while retention
(`keep_days = 30`) purges for `--seconds`. The table gives the store's write time (median, 99th
percentile, worst) in both phases, their ratio, and the series purged per second. A store waits
for a purge's transaction (SQLite has one writer): before the job links were indexed by
instance, one series held the lock for seconds on a year's database and stores were refused.
Prints a table and writes JSON (default benchmarks/results/retention.json):
    python benchmarks/retention.py [--series 20000] [--instances 10] [--seconds 20] [--out FILE]
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from dicomnode.config import RetentionSettings, Settings  # noqa: E402
from dicomnode.db import ReceivedInstance, open_database  # noqa: E402
from dicomnode.db.engine import Database  # noqa: E402
from dicomnode.db.instances import record_instance  # noqa: E402
from dicomnode.db.models import (  # noqa: E402
    Delivery,
    Instance,
    Job,
    JobInstance,
    Series,
    Study,
    utcnow,
)
from dicomnode.pipeline.retention import purge_delivered  # noqa: E402
from dicomnode.spool import Spool  # noqa: E402
from dicomnode.status import DeliveryStatus, JobPart, JobStatus  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
STORE_EVERY = 0.05  # seconds between two instance rows recorded (20 stores a second)


def fill(db: Database, spool: Spool, series_count: int, per_series: int) -> None:
    """Delivered series as the node leaves them, inserted in bulk, studies of 3 series each."""
    finished = utcnow() - timedelta(days=60)
    batch = 2000  # series per transaction
    for first in range(0, series_count, batch):
        studies, series, instances, jobs, links, deliveries = [], [], [], [], [], []
        for number in range(first, min(series_count, first + batch)):
            study_uid, series_uid = f"2.25.1.{number // 3}", f"2.25.2.{number}"
            if number % 3 == 0:
                studies.append({"study_uid": study_uid})
            series.append({"series_uid": series_uid, "study_uid": study_uid, "pending": False})
            for part, offset in ((JobPart.ORIGINALS, 1), (JobPart.DERIVED, 2)):
                job_id = 2 * number + offset
                jobs.append(
                    {
                        "id": job_id,
                        "study_uid": study_uid,
                        "series_uid": series_uid,
                        "part": part,
                        "status": JobStatus.DONE,
                        "attempts": 1,
                        "created_at": finished,
                        "updated_at": finished,
                    }
                )
                deliveries.append(
                    {"job_id": job_id, "destination": "pacs", "status": DeliveryStatus.DONE}
                )
            for index in range(per_series):
                sop = f"{series_uid}.{index}"
                path = spool.instances_dir / study_uid / series_uid / f"{sop}.dcm"
                instances.append(
                    {
                        "sop_instance_uid": sop,
                        "series_uid": series_uid,
                        "study_uid": study_uid,
                        "sop_class_uid": CT,
                        "transfer_syntax_uid": EXPLICIT,
                        "path": str(path),
                        "size_bytes": 530_000,
                        "received_at": finished,
                    }
                )
                links += [{"job_id": 2 * number + o, "sop_instance_uid": sop} for o in (1, 2)]
        with db.session() as session:
            for model, rows in (
                (Study, studies),
                (Series, series),
                (Instance, instances),
                (Job, jobs),
                (JobInstance, links),
                (Delivery, deliveries),
            ):
                if rows:
                    session.execute(insert(model), rows)


def store_times(db: Database, spool: Spool, until: threading.Event) -> list[float]:
    """Seconds each instance row took to record, one every STORE_EVERY until `until` is set."""
    study, series = generate_uid(), generate_uid()
    times = []
    while not until.is_set():
        sop = generate_uid()
        item = ReceivedInstance(
            sop, CT, EXPLICIT, study, series, "CT", spool.instances_dir / f"{sop}.dcm", 1, "BENCH"
        )
        started = time.perf_counter()
        record_instance(db, item)
        times.append(time.perf_counter() - started)
        until.wait(STORE_EVERY)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "stores": len(ordered),
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


def run(series_count: int, per_series: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dicomnode-retention-") as folder:
        spool = Spool(Path(folder) / "spool")
        db = open_database(f"sqlite:///{Path(folder) / 'dicomnode.sqlite'}")
        started = time.perf_counter()
        fill(db, spool, series_count, per_series)
        filled_s = time.perf_counter() - started

        stop = threading.Event()
        threading.Timer(min(seconds, 10), stop.set).start()
        idle = store_times(db, spool, stop)

        settings = Settings(retention=RetentionSettings(keep_days=30))
        stopping, purged = threading.Event(), []

        def purge() -> None:
            purged.extend(purge_delivered(settings, db, spool, stopping=stopping))

        purger = threading.Thread(target=purge)
        purge_started = time.perf_counter()
        purger.start()
        stop = threading.Event()
        threading.Timer(seconds, stop.set).start()
        busy = store_times(db, spool, stop)
        stopping.set()
        purger.join()
        purge_s = time.perf_counter() - purge_started
        db.dispose()
    return {
        "series": series_count,
        "instances_per_series": per_series,
        "fill_seconds": filled_s,
        "idle": summary(idle),
        "during_purge": summary(busy),
        "series_purged": len(purged),
        "series_purged_per_second": len(purged) / purge_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20000)
    parser.add_argument("--instances", type=int, default=10, help="instance rows per series")
    parser.add_argument("--seconds", type=float, default=20, help="how long retention runs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/retention.json")
    args = parser.parse_args()
    result = run(args.series, args.instances, args.seconds)
    idle, busy = result["idle"], result["during_purge"]
    print(
        f"{result['series']} delivered series, {result['instances_per_series']} instances each "
        f"(filled in {result['fill_seconds']:.0f} s); retention ran {args.seconds:g} s and purged "
        f"{result['series_purged']} series ({result['series_purged_per_second']:.1f}/s)"
    )
    print(f"{'store write':<16}{'stores':>8}{'median ms':>12}{'p99 ms':>10}{'max ms':>10}")
    for name, row in (("idle", idle), ("during purge", busy)):
        print(
            f"{name:<16}{row['stores']:>8}{row['median_ms']:>12.1f}{row['p99_ms']:>10.1f}"
            f"{row['max_ms']:>10.1f}"
        )
    print(f"ratio during purge / idle (median): {busy['median_ms'] / idle['median_ms']:.2f}")
    result["host"] = {"python": platform.python_version(), "machine": platform.machine()}
    result["when"] = datetime.now().isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
