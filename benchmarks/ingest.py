"""Ingest rate: the same generated CT series sent by DCMTK `storescu` to three receivers.

  * DCMTK `storescp` (C++, writes files, no fsync): the ceiling;
  * Orthanc (what a site would run instead): the bar to meet;
  * dicomnode (every instance fsync'd and committed before Success).

Prints a table and writes JSON (default benchmarks/results/ingest.json). Usage:
    python benchmarks/ingest.py [--instances 200] [--size 512] [--repeats 3] [--out FILE]
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dcmtk import peer_env, storescu  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402
from tests.support.ports import free_port, wait_for_port  # noqa: E402
from tests.support.series import write_ct_series  # noqa: E402


def timed_send(port: int, folder: Path, called_aet: str, expected: int) -> float:
    """Seconds for one `storescu` association carrying every file of `folder`."""
    started = time.perf_counter()
    result = storescu(port, folder, called_aet=called_aet)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or "Failed" in result.stderr:
        raise RuntimeError(f"storescu to {called_aet} failed: {result.stderr[-2000:]}")
    return elapsed


def run_storescp(work: Path, folders: list[Path], count: int) -> list[float]:
    port = free_port()
    out = work / "storescp-out"
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=peer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        return [timed_send(port, folder, "STORESCP", count) for folder in folders]
    finally:
        process.terminate()
        process.wait()


def run_orthanc(work: Path, folders: list[Path], count: int) -> list[float]:
    server = Orthanc(work / "orthanc").start()
    try:
        times = [
            timed_send(server.dicom_port, folder, server.ae_title, count) for folder in folders
        ]
        stored = len(server.instance_ids())
        if stored != count * len(folders):
            raise RuntimeError(f"Orthanc holds {stored} of {count} instances")
        return times
    finally:
        server.stop()


def run_node(work: Path, folders: list[Path], count: int) -> list[float]:
    node = NodeProcess(
        work / "node",
        [],
        {
            "completion": {"series_quiet_seconds": 3600},
            "logging": {"level": "INFO"},
            "worker": {"poll_seconds": 1.0},  # the shipped default, not the tests' fast polling
        },
    ).start()
    try:
        times = [timed_send(node.port, folder, node.ae_title, count) for folder in folders]
        spooled = len(list((node.data_dir / "spool" / "instances").rglob("*.dcm")))
        if spooled != count * len(folders):
            raise RuntimeError(f"dicomnode spooled {spooled} of {count} instances")
        return times
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="series sent to each receiver")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as tmp:
        work = Path(tmp)
        folders = [work / f"series{i}" for i in range(args.repeats)]
        for seed, folder in enumerate(folders):
            files = write_ct_series(folder, args.instances, size=args.size, seed=seed)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        runs = {
            "storescp": run_storescp(work, folders, args.instances),
            "orthanc": run_orthanc(work, folders, args.instances),
            "dicomnode": run_node(work, folders, args.instances),
        }

    results = {}
    for name, times in runs.items():
        median = statistics.median(times)
        results[name] = {
            "seconds_median": round(median, 3),
            "seconds_all": [round(t, 3) for t in times],
            "instances_per_s": round(args.instances / median, 1),
            "mb_per_s": round(megabytes / median, 1),
        }
    node_rate = results["dicomnode"]["instances_per_s"]
    ratios = {
        "dicomnode_vs_orthanc": round(node_rate / results["orthanc"]["instances_per_s"], 2),
        "dicomnode_vs_storescp": round(node_rate / results["storescp"]["instances_per_s"], 2),
    }
    print(
        f"{args.instances} instances, {args.size}x{args.size} CT, {megabytes:.1f} MB, "
        f"median of {args.repeats} series each, storescu with TCP_NODELAY=1"
    )
    print(f"{'receiver':<12}{'seconds':>10}{'inst/s':>10}{'MB/s':>10}")
    for name, row in results.items():
        print(
            f"{name:<12}{row['seconds_median']:>10.3f}{row['instances_per_s']:>10.1f}"
            f"{row['mb_per_s']:>10.1f}"
        )
    print(f"dicomnode / orthanc  = {ratios['dicomnode_vs_orthanc']:.2f}x")
    print(f"dicomnode / storescp = {ratios['dicomnode_vs_storescp']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "instances": args.instances,
                "size": args.size,
                "megabytes": round(megabytes, 1),
                "repeats": args.repeats,
                "machine": platform.platform(),
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
