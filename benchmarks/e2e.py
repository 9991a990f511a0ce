"""End to end: a CT series through a node on the shipped defaults, forwarding to a real Orthanc.

DCMTK `storescu` sends one series (one association) to `dicomnode serve`; from the moment the last
instance is acknowledged (storescu exits), the PACS is polled until it holds the originals, then
everything the node sends (originals + derived series + metrics SR; or only the originals when the
do-no-harm gate holds the derived series, which the table says). A fresh node and Orthanc per run,
so the first job pays whatever start-up the node leaves to it; the series is sent once the node
has logged that it started (models loaded and warmed), as to a node that runs for months: sent
as soon as the port answers, it would also time the node's start. While it waits, the benchmark asks
Orthanc's REST API and the node's /metrics, not `dicomnode jobs` (a process per poll would take a
core from the node). Per-stage seconds (load, self-check, enhance, write) come from the derived
job's details; when that job was created (the completion rule), claimed and had forwarded its
series, how long it waited for the originals (their head start) and the forward's own seconds,
from the node's log lines. Prints a table and writes JSON (default benchmarks/results/e2e.json):
    python benchmarks/e2e.py [--instances 300] [--size 512] [--repeats 3] [--out FILE]
"""

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dcmtk import storescu  # noqa: E402
from tests.support.metrics import Scrape  # noqa: E402
from tests.support.node import NodeProcess, part_of  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402
from tests.support.series import series_instance_uid, write_ct_series  # noqa: E402

# The shipped [enhance], [completion] and [worker] defaults, over NodeProcess's test values.
SHIPPED = {
    "completion": {"series_quiet_seconds": 30, "release_quiet_seconds": 2},
    "worker": {"poll_seconds": 1.0, "lease_seconds": 300},
    "logging": {"level": "INFO"},
    "enhance": {"methods": ["srcnn"], "qa_action": "hold"},
    "http": {"enabled": True},  # off when shipped; the benchmark polls /metrics
}
FINAL = {"done", "held", "dead", "cancelled"}
PACS_EVERY = 0.2  # seconds between two looks at the PACS (Orthanc answers in ~2 ms)
STATUS_EVERY = 2.0  # seconds between two looks at the node's /metrics before the PACS is full


def pacs_counts(pacs: Orthanc, original_uid: str) -> tuple[int, int]:
    """(instances of the original series, instances of every other series) held by the PACS."""
    originals = others = 0
    for series in pacs.get("/series?expand").json():
        count = len(series["Instances"])
        if series["MainDicomTags"]["SeriesInstanceUID"] == original_uid:
            originals += count
        else:
            others += count
    return originals, others


def final_derived_status(node: NodeProcess) -> str | None:
    """The derived job's state once it is final, from the node's /metrics (None before).

    An HTTP GET the node answers from one query (~10 ms of its interpreter), where a
    `dicomnode jobs` process per poll would take most of a core from the node it measures;
    `one_run` asks only when the PACS holds what a done job sends, and otherwise every
    `STATUS_EVERY` seconds (a held or failed job sends nothing to wait for)."""
    scrape = Scrape(node.http_port)
    return next(
        (s for s in sorted(FINAL) if scrape.value("dicomnode_jobs", status=s, part="derived")),
        None,
    )


def one_run(work: Path, folder: Path, count: int, timeout: float) -> dict[str, Any]:
    pacs = Orthanc(work / "orthanc").start()
    node = NodeProcess(
        work / "node",
        [{"name": "pacs", "ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.dicom_port}],
        SHIPPED,
    ).start()
    try:
        node.wait_for_log("node started", timeout=300)
        sent = storescu(node.port, folder)
        acknowledged = time.monotonic()
        acknowledged_at = time.time()  # the same moment on the clock the node's log uses
        if sent.returncode != 0 or "Failed" in sent.stderr:
            raise RuntimeError(f"storescu failed: {sent.stderr[-2000:]}")
        original_uid = series_instance_uid(next(folder.iterdir()))
        originals_s = everything_s = None
        status_asked = -STATUS_EVERY
        while time.monotonic() - acknowledged < timeout:
            now = time.monotonic() - acknowledged
            originals, others = pacs_counts(pacs, original_uid)
            if originals_s is None and originals >= count:
                originals_s = now
            full = originals_s is not None and others >= count + 1  # + the SR
            if originals_s is not None and (full or now - status_asked >= STATUS_EVERY):
                status_asked = now
                derived_status = final_derived_status(node)
                if derived_status is not None and (full or derived_status != "done"):
                    everything_s = now
                    break
            time.sleep(PACS_EVERY)
        if everything_s is None:
            raise RuntimeError(f"not everything at the PACS after {timeout:.0f} s: {node.jobs()}")
        derived_id = part_of(node.jobs(), "derived")["id"]
        derived = json.loads(node.cli("jobs", "show", str(derived_id), "--json").stdout)
        return {
            "originals_at_pacs_s": round(originals_s, 2),
            "everything_at_pacs_s": round(everything_s, 2),
            "derived_status": derived["status"],
            "instances_at_pacs": sum(pacs_counts(pacs, original_uid)),
            "timeline_s": timeline(node.log(), derived_id, acknowledged_at),
            "stages_s": stages_of(derived),
        }
    finally:
        node.stop()
        pacs.stop()


def _logged_at(log: str, pattern: str) -> tuple[float, re.Match[str]] | None:
    """When the node logged the first line matching `pattern` (epoch seconds), and the match."""
    found = re.search(rf"^(\S+) INFO \S+ {pattern}", log, re.M)
    if found is None:
        return None
    return datetime.fromisoformat(found.group(1)).timestamp(), found  # 3.11 reads the "Z"


def timeline(log: str, derived_id: int, acknowledged_at: float) -> dict[str, float | None]:
    """Seconds after the last acknowledgement at which the derived job was created (the
    completion rule), claimed by a worker, and had forwarded its series; how long it then waited
    for the originals to be sent (the head start), how many of its sources it measured meanwhile
    and how long its forward took. From the node's own log lines (None where a line is missing:
    a held series is not forwarded, a wait under 0.1 s is not logged)."""
    job = rf"job={derived_id}\b"
    created = _logged_at(log, rf"job created {job}")
    claimed = _logged_at(log, rf"job started {job}")
    waited = _logged_at(log, rf"job waited for the originals {job} .*seconds=([0-9.]+)")
    forwarded = _logged_at(log, rf"forwarded {job} .*seconds=([0-9.]+)")
    ahead = _logged_at(log, rf"sources measured ahead {job} .*images=([0-9]+)")

    def after(event: tuple[float, re.Match[str]] | None) -> float | None:
        return None if event is None else round(event[0] - acknowledged_at, 2)

    def seconds(event: tuple[float, re.Match[str]] | None) -> float | None:
        return None if event is None else float(event[1].group(2))

    return {
        "derived_created": after(created),
        "derived_claimed": after(claimed),
        "waited_for_originals": seconds(waited),
        "measured_ahead": None if ahead is None else int(ahead[1].group(2)),
        "derived_forwarded": after(forwarded),
        "forward": seconds(forwarded),
    }


def stages_of(job: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage of the derived job, as its details record them."""
    details = job.get("details") or {}
    stages = {"load": details.get("load_s", 0.0)}
    for method in details.get("methods", []):
        for name, seconds in method["timings"].items():
            key = name.removesuffix("_s")
            stages[key] = round(stages.get(key, 0.0) + seconds, 2)
    first = details["methods"][0] if details.get("methods") else {}
    stages["device"] = first.get("device", "-")
    stages["version"] = first.get("version", "-")  # names the views SRCNN averaged over
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="per run, seconds")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "e2e.json")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="dicomnode-e2e-") as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            folder = work / f"series{repeat}"
            write_ct_series(folder, args.instances, size=args.size, seed=repeat)
            runs.append(one_run(work / f"run{repeat}", folder, args.instances, args.timeout))

    print(
        f"{args.instances} x {args.size}² CT, storescu → dicomnode (shipped defaults) → Orthanc; "
        "seconds after the last instance was acknowledged"
    )
    header = f"{'run':<5}{'originals':>11}{'everything':>12}{'derived':>10}  stages (s)"
    print(header)
    for index, run in enumerate(runs, 1):
        stages = ", ".join(f"{k} {v}" for k, v in run["stages_s"].items())
        print(
            f"{index:<5}{run['originals_at_pacs_s']:>11.2f}{run['everything_at_pacs_s']:>12.2f}"
            f"{run['derived_status']:>10}  {stages}"
        )
        times = run["timeline_s"]
        print(
            f"{'':<5}derived job created at {times['derived_created']} s (completion rule), "
            f"claimed at {times['derived_claimed']} s, waited {times['waited_for_originals']} s "
            f"for the originals (measured {times['measured_ahead']} sources meanwhile), "
            f"forwarded by {times['derived_forwarded']} s (the forward: {times['forward']} s)"
        )
    medians = {
        key: round(statistics.median(run[key] for run in runs), 2)
        for key in ("originals_at_pacs_s", "everything_at_pacs_s")
    }
    print(
        f"median: originals {medians['originals_at_pacs_s']} s, everything "
        f"{medians['everything_at_pacs_s']} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "instances": args.instances,
                "size": args.size,
                "machine": platform.platform(),
                "runs": runs,
                "median": medians,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
