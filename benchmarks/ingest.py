"""Ingest rate: the same generated CT series sent by DCMTK `storescu` to three receivers.

  * DCMTK `storescp` (C++, writes files, no fsync): the ceiling;
  * Orthanc (what a site would run instead): the bar to meet;
  * dicomnode (every instance fsync'd and committed before Success), on its shipped defaults
    except `node.listener_processes` (`--listener-processes`, default 0 = auto: one per core,
    at most 4, what a site receiving from several modalities sets).

Two cases, in the same run: one sender (one `storescu`, `--instances` per series) and several
senders at once (`--senders` `storescu` processes, each with its own series of
`--concurrent-instances`). The three receivers are started once and take each round in turns,
round i starting with receiver i, each from a page cache with nothing left to write back: run
one after the other, the last receiver paid for the files of those before it (the kernel's
writes and flushes of ~1.4 GB). Every peer runs with TCP_NODELAY=1. Rounds take under a second
each, so the median of `--repeats` rounds is printed.
Prints a table and writes JSON (default benchmarks/results/ingest.json). Usage:
    python benchmarks/ingest.py [--instances 200] [--senders 4] [--concurrent-instances 60]
                                [--size 512] [--repeats 5] [--out FILE]
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dcmtk import peer_env, storescu, storescu_at_once  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402
from tests.support.ports import free_port, wait_for_port  # noqa: E402
from tests.support.series import write_ct_series  # noqa: E402


def _check(result: subprocess.CompletedProcess[str], receiver: "Receiver") -> None:
    if result.returncode != 0 or "Failed" in result.stderr:
        raise RuntimeError(f"storescu to {receiver.name} failed: {result.stderr[-2000:]}")


@dataclass(frozen=True)
class Receiver:
    """A receiver that is up: where to send, and how many instances it holds now."""

    name: str
    port: int
    ae_title: str
    stored: Callable[[], int]


@contextmanager
def storescp_receiver(work: Path) -> Iterator[Receiver]:
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
        yield Receiver("storescp", port, "STORESCP", lambda: len(list(out.glob("*"))))
    finally:
        process.terminate()
        process.wait()


@contextmanager
def orthanc_receiver(work: Path) -> Iterator[Receiver]:
    server = Orthanc(work / "orthanc").start()
    try:
        yield Receiver(
            "orthanc", server.dicom_port, server.ae_title, lambda: len(server.instance_ids())
        )
    finally:
        server.stop()


@contextmanager
def node_receiver(work: Path, listener_processes: int) -> Iterator[Receiver]:
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
    spool = node.data_dir / "spool" / "instances"
    try:
        node.wait_for_log("node started")  # every listener process is up
        yield Receiver(
            "dicomnode", node.port, node.ae_title, lambda: len(list(spool.rglob("*.dcm")))
        )
    finally:
        node.stop()


def rotated(receivers: list[Receiver], round_index: int) -> list[Receiver]:
    """Round i starts with receiver i: each receiver follows each other one equally often."""
    shift = round_index % len(receivers)
    return receivers[shift:] + receivers[:shift]


def send_series(receiver: Receiver, folder: Path) -> None:
    """One `storescu` association carrying every file of `folder`."""
    _check(storescu(receiver.port, folder, called_aet=receiver.ae_title), receiver)


def send_at_once(receiver: Receiver, folders: list[Path]) -> None:
    """One `storescu` per folder, all started at once; returns when the last one ends."""
    for result in storescu_at_once(receiver.port, folders, called_aet=receiver.ae_title):
        _check(result, receiver)


def timed(send: Callable[[], None]) -> float:
    """Seconds for `send()`, started from a page cache with nothing left to write back.

    storescp and Orthanc do not fsync: the files of their last round would otherwise still be
    written back, and flushed by the next receiver's fsyncs (ext4 commits its journal in order),
    while that receiver is being timed.
    """
    os.sync()
    started = time.perf_counter()
    send()
    return time.perf_counter() - started


def run_rounds(
    receivers: list[Receiver], single: list[Path], concurrent: list[list[Path]]
) -> dict[str, dict[str, list[float]]]:
    """Every receiver takes round i of a case before any takes round i + 1, in turns."""
    times: dict[str, dict[str, list[float]]] = {
        r.name: {"single": [], "concurrent": []} for r in receivers
    }
    for index, folder in enumerate(single):
        for receiver in rotated(receivers, index):
            seconds = timed(partial(send_series, receiver, folder))
            times[receiver.name]["single"].append(seconds)
    for index, group in enumerate(concurrent):
        for receiver in rotated(receivers, index):
            seconds = timed(partial(send_at_once, receiver, group))
            times[receiver.name]["concurrent"].append(seconds)
    return times


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
    parser.add_argument("--repeats", type=int, default=5, help="rounds of each case per receiver")
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
        folders = single + [folder for group in concurrent for folder in group]
        expected = sum(len(list(folder.glob("*.dcm"))) for folder in folders)
        with (
            storescp_receiver(work) as storescp,
            orthanc_receiver(work) as orthanc,
            node_receiver(work, args.listener_processes) as node,
        ):
            receivers = [storescp, orthanc, node]
            runs = run_rounds(receivers, single, concurrent)
            for r in receivers:
                if (held := r.stored()) != expected:
                    raise RuntimeError(f"{r.name} holds {held} of {expected} instances")

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
