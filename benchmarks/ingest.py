"""Ingest rate: the same generated CT series sent by DCMTK `storescu` to three receivers.

  * DCMTK `storescp` (C++, writes files, no fsync): the ceiling;
  * Orthanc (what a site would run instead): the bar to meet;
  * dicomnode (every instance fsync'd and committed before Success), on its shipped defaults
    except `node.listener_processes` (`--listener-processes`, default 0 = auto: one per core,
    at most 4, what a site receiving from several modalities sets).

Two cases, each receiver started once for both, in the same run: one sender (one `storescu`,
`--instances` per series) and several senders at once (`--senders` `storescu` processes, each
with its own series of `--concurrent-instances`). Every peer runs with TCP_NODELAY=1.
Prints a table and writes JSON (default benchmarks/results/ingest.json). Usage:
    python benchmarks/ingest.py [--instances 200] [--senders 4] [--concurrent-instances 60]
                                [--size 512] [--repeats 3] [--out FILE]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dcmtk import peer_env, storescu, storescu_at_once  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402
from tests.support.ports import free_port, wait_for_port  # noqa: E402
from tests.support.series import write_ct_series  # noqa: E402


def _check(result: subprocess.CompletedProcess[str], called_aet: str) -> None:
    if result.returncode != 0 or "Failed" in result.stderr:
        raise RuntimeError(f"storescu to {called_aet} failed: {result.stderr[-2000:]}")


def timed_send(port: int, folder: Path, called_aet: str) -> float:
    """Seconds for one `storescu` association carrying every file of `folder`."""
    started = time.perf_counter()
    result = storescu(port, folder, called_aet=called_aet)
    elapsed = time.perf_counter() - started
    _check(result, called_aet)
    return elapsed


def timed_concurrent_send(port: int, folders: list[Path], called_aet: str) -> float:
    """Seconds from starting one `storescu` per folder, all at once, to the last one's end."""
    started = time.perf_counter()
    results = storescu_at_once(port, folders, called_aet=called_aet)
    elapsed = time.perf_counter() - started
    for result in results:
        _check(result, called_aet)
    return elapsed


class Workload:
    """The series of both cases: `single[i]` for repeat i, `concurrent[i]` its senders' series."""

    def __init__(self, single: list[Path], concurrent: list[list[Path]]) -> None:
        self.single = single
        self.concurrent = concurrent

    def instances(self) -> int:
        folders = self.single + [f for group in self.concurrent for f in group]
        return sum(len(list(folder.glob("*.dcm"))) for folder in folders)

    def run(self, port: int, called_aet: str) -> dict[str, list[float]]:
        return {
            "single": [timed_send(port, folder, called_aet) for folder in self.single],
            "concurrent": [
                timed_concurrent_send(port, group, called_aet) for group in self.concurrent
            ],
        }


def run_storescp(work: Path, load: Workload) -> dict[str, list[float]]:
    port = free_port()
    out = work / "storescp-out"
    out.mkdir()
    process = subprocess.Popen(
        # --fork: one process per association, as storescp serves several callers at once.
        ["storescp", "--fork", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=peer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        return load.run(port, "STORESCP")
    finally:
        process.terminate()
        process.wait()


def run_orthanc(work: Path, load: Workload) -> dict[str, list[float]]:
    server = Orthanc(work / "orthanc").start()
    try:
        times = load.run(server.dicom_port, server.ae_title)
        stored = len(server.instance_ids())
        if stored != load.instances():
            raise RuntimeError(f"Orthanc holds {stored} of {load.instances()} instances")
        return times
    finally:
        server.stop()


def run_node(work: Path, load: Workload, listener_processes: int) -> dict[str, list[float]]:
    node = NodeProcess(
        work / "node",
        [],
        {
            "completion": {"series_quiet_seconds": 3600},
            "logging": {"level": "INFO"},
            "node": {"listener_processes": listener_processes},
            "worker": {"poll_seconds": 1.0},  # the shipped default, not the tests' fast polling
        },
    ).start()
    try:
        node.wait_for_log("node started")  # every listener process is up
        times = load.run(node.port, node.ae_title)
        spooled = len(list((node.data_dir / "spool" / "instances").rglob("*.dcm")))
        if spooled != load.instances():
            raise RuntimeError(f"dicomnode spooled {spooled} of {load.instances()} instances")
        return times
    finally:
        node.stop()


def summary(times: list[float], instances: int, megabytes: float) -> dict[str, object]:
    median = statistics.median(times)
    return {
        "seconds_median": round(median, 3),
        "seconds_all": [round(t, 3) for t in times],
        "instances_per_s": round(instances / median, 1),
        "mb_per_s": round(megabytes / median, 1),
    }


def write_series(folder: Path, count: int, size: int, seed: int) -> float:
    """Megabytes written."""
    files = write_ct_series(folder, count, size=size, seed=seed)
    return sum(f.stat().st_size for f in files) / 1e6


def print_case(title: str, results: dict[str, dict[str, object]], ratios: dict[str, float]) -> None:
    print(title)
    print(f"{'receiver':<12}{'seconds':>10}{'inst/s':>10}{'MB/s':>10}")
    for name, row in results.items():
        print(
            f"{name:<12}{row['seconds_median']:>10.3f}{row['instances_per_s']:>10.1f}"
            f"{row['mb_per_s']:>10.1f}"
        )
    print(f"dicomnode / orthanc  = {ratios['dicomnode_vs_orthanc']:.2f}x")
    print(f"dicomnode / storescp = {ratios['dicomnode_vs_storescp']:.2f}x")


def ratios_of(results: dict[str, dict[str, object]]) -> dict[str, float]:
    node = float(str(results["dicomnode"]["instances_per_s"]))
    return {
        f"dicomnode_vs_{peer}": round(node / float(str(results[peer]["instances_per_s"])), 2)
        for peer in ("orthanc", "storescp")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200, help="per series, one sender")
    parser.add_argument("--senders", type=int, default=4, help="storescu processes at once")
    parser.add_argument(
        "--concurrent-instances", type=int, default=60, help="per sender's series, senders case"
    )
    parser.add_argument(
        "--listener-processes", type=int, default=0, help="the node's (0: one per core, <= 4)"
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each case per receiver")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as tmp:
        work = Path(tmp)
        single = [work / f"single{i}" for i in range(args.repeats)]
        concurrent = [
            [work / f"round{i}-sender{j}" for j in range(args.senders)] for i in range(args.repeats)
        ]
        seed = 0
        for folder in single:
            single_mb = write_series(folder, args.instances, args.size, seed)
            seed += 1
        concurrent_mb = 0.0
        for folder in concurrent[0]:
            concurrent_mb += write_series(folder, args.concurrent_instances, args.size, seed)
            seed += 1
        for group in concurrent[1:]:
            for folder in group:
                write_series(folder, args.concurrent_instances, args.size, seed)
                seed += 1
        load = Workload(single, concurrent)
        runs = {
            "storescp": run_storescp(work, load),
            "orthanc": run_orthanc(work, load),
            "dicomnode": run_node(work, load, args.listener_processes),
        }

    concurrent_count = args.senders * args.concurrent_instances
    cases = {
        "one_sender": {
            name: summary(times["single"], args.instances, single_mb)
            for name, times in runs.items()
        },
        f"{args.senders}_senders": {
            name: summary(times["concurrent"], concurrent_count, concurrent_mb)
            for name, times in runs.items()
        },
    }
    ratios = {case: ratios_of(results) for case, results in cases.items()}
    print(
        f"{args.size}x{args.size} CT, median of {args.repeats} rounds per receiver, storescu "
        f"with TCP_NODELAY=1, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    print_case(
        f"\none sender: {args.instances} instances, {single_mb:.1f} MB",
        cases["one_sender"],
        ratios["one_sender"],
    )
    print_case(
        f"\n{args.senders} senders at once: {args.senders} x {args.concurrent_instances} "
        f"instances, {concurrent_mb:.1f} MB",
        cases[f"{args.senders}_senders"],
        ratios[f"{args.senders}_senders"],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "size": args.size,
                "repeats": args.repeats,
                "one_sender": {"instances": args.instances, "megabytes": round(single_mb, 1)},
                "senders": {
                    "senders": args.senders,
                    "instances_each": args.concurrent_instances,
                    "megabytes": round(concurrent_mb, 1),
                },
                "machine": platform.platform(),
                "cores": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "results": cases,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
