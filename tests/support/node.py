"""A real `dicomnode serve` process with its own config, data dir and port (and `dicomnode
worker` processes on the same settings)."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from tests.support.ports import free_port, wait_for_port, wait_for_port_closed


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if not isinstance(value, int | float) else repr(value)


def write_config(
    path: Path,
    sections: dict[str, dict[str, Any]],
    destinations: list[dict[str, Any]],
    peers: list[dict[str, Any]] | None = None,
) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    for destination in destinations:
        lines.append("[[destinations]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in destination.items()]
    for peer in peers or []:
        lines.append("[[peers]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in peer.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def part_of(jobs: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """The newest job of `part` ("originals" or "derived") in a `jobs list`, or {} if none."""
    return next((job for job in jobs if job["part"] == part), {})


class NodeProcess:
    """Owns one node process; it can be stopped, killed and started again on the same data."""

    ae_title = "DICOMNODE"

    def __init__(
        self,
        workdir: Path,
        destinations: list[dict[str, Any]],
        overrides: dict[str, dict[str, Any]] | None = None,
        peers: list[dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.http_port = free_port()  # the metrics endpoint, when a test enables [http]
        self.data_dir = workdir / "data"
        sections: dict[str, dict[str, Any]] = {
            "node": {
                "ae_title": self.ae_title,
                "host": "127.0.0.1",
                "port": self.port,
                "data_dir": str(self.data_dir),
                "min_free_disk_mb": 1,
            },
            # A sender's release completes a series at once; quiet alone takes 3 s (at 1 s, a
            # loaded CI machine's storescu paused mid-series and the series became two jobs).
            "completion": {"series_quiet_seconds": 3, "release_quiet_seconds": 0.5},
            "worker": {"poll_seconds": 0.2, "lease_seconds": 10},
            # No probe of a destination that is back unless a test asks for one: it would bring
            # a retry forward in the tests that time the backoff.
            "retry": {
                "initial_delay_seconds": 1,
                "max_delay_seconds": 4,
                "jitter": 0.1,
                "probe_seconds": 0,
            },
            "network": {
                "acse_timeout": 10,
                "dimse_timeout": 20,
                "network_timeout": 20,
                "connect_timeout": 5,
            },
            "logging": {"level": "DEBUG"},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            # Forward-only unless a test asks for enhancement: the backbone tests count instances.
            # Derived series go out whatever their numbers say, unless a test checks the gate.
            "enhance": {"methods": [], "qa_action": "flag"},
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(workdir / "dicomnode.toml", sections, destinations, peers)
        self.log_path = workdir / "node.log"
        self.command = "serve"
        self.env: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    def worker(self, name: str, env: dict[str, str] | None = None) -> "NodeProcess":
        """A `dicomnode worker` on this node's settings, spool and database (not started), with
        its own log `<name>.log` and environment (`env`: DICOMNODE_* overrides for it alone)."""
        worker = copy.copy(self)
        worker.command, worker.env = "worker", {**self.env, **(env or {})}
        worker.log_path = self.workdir / f"{name}.log"
        worker._process = None
        return worker

    def cli(
        self, *args: str, check: bool = True, answer: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run a `dicomnode` admin command against this node's config and environment
        overrides (`env`); `answer` is its stdin (what an admin types at a confirmation prompt;
        nothing: end of input)."""
        result = subprocess.run(
            [sys.executable, "-m", "dicomnode", *args, "--config", str(self.config_path)],
            input=answer,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **self.env, "COLUMNS": "200"},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"dicomnode {' '.join(args)} failed: {result.stderr}")
        return result

    def jobs(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("jobs", "list", "--json").stdout)["jobs"]

    def start(self) -> "NodeProcess":
        logged_before = len(self.log())
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            [sys.executable, "-m", "dicomnode", self.command, "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        if self.command == "serve":
            wait_for_port(self.port)
            # The port opens before the models load (seconds, and a few hundred MB): a test
            # gets the node as it runs for months, not one still starting.
            self.wait_for_log("node started", since=logged_before, timeout=120)
        else:
            self.wait_for_log("worker started", since=logged_before)
        return self

    def wait_for_log(self, text: str, timeout: float = 60.0, since: int = 0) -> str:
        """The first log line containing `text` (after the first `since` characters of the log),
        once it is written; fail showing the log if the process exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            # Whether it exited, read before the log: a line written just before the exit counts.
            exited = self._process is not None and self._process.poll() is not None
            lines = [line for line in self.log()[since:].splitlines() if text in line]
            if lines:
                return lines[0]
            if exited or time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line with {text!r}\n--- node log tail ---\n{self.log()[-4000:]}"
                )
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """The node process's id (its memory is read from /proc/<pid>)."""
        assert self._process is not None, "the node is not running"
        return self._process.pid

    def stop(self) -> int | None:
        if self._process is None:
            return None
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._process = None
        return code

    def signal(self, signum: int) -> None:
        """Send `signum` (SIGINT is what Ctrl-C sends) without waiting."""
        assert self._process is not None, "the node is not running"
        self._process.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code once the process ends by itself (after `signal`)."""
        assert self._process is not None, "the node is not running"
        code = self._process.wait(timeout=timeout)
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or a power cut of the process.

        Its receiver processes (node.listener_processes) die with it, a moment later: wait
        until none accepts on the port, so that a start that follows waits for its own."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
            if self.command == "serve":
                wait_for_port_closed(self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_parts(
        self, *, derived: str, originals: str = "done", timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Wait until the newest derived and originals jobs are in these states."""
        return self.wait_for_jobs(
            lambda jobs: (
                part_of(jobs, "derived").get("status") == derived
                and part_of(jobs, "originals").get("status") == originals
            ),
            timeout,
        )

    def wait_for_jobs(self, predicate, timeout: float = 60.0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
        """Poll `jobs list --json` until predicate(jobs) holds; else fail showing the log."""
        deadline = time.monotonic() + timeout
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if predicate(jobs):
                return jobs
            time.sleep(0.3)
        raise AssertionError(
            f"jobs never matched: {json.dumps(jobs, indent=1)}\n"
            f"--- node log tail ---\n{self.log()[-4000:]}"
        )


def listener_only_node(data_dir: Path) -> Any:
    """An in-process `Node` that only listens, on a free port: no workers, no methods, no
    destination."""
    from dicomnode.config import EnhanceSettings, NodeSettings, Settings, WorkerSettings
    from dicomnode.node import Node

    return Node(
        Settings(
            node=NodeSettings(host="127.0.0.1", port=free_port(), data_dir=str(data_dir)),
            worker=WorkerSettings(workers=0),
            enhance=EnhanceSettings(methods=[]),
        )
    )


def started_in_a_thread(
    data_dir: Path, pacs_port: int, enhance: Any, stop_requested: Any = None
) -> tuple[Any, Any]:
    """An in-process `Node` on a free port sending to a storescp (STORESCP) at `pacs_port`, a
    series complete 0.5 s after its sender released it, with `enhance` (EnhanceSettings); its
    `start` (given `stop_requested`, if any) runs in a daemon thread (it waits for the models)
    once the node listens: (node, thread)."""
    import threading

    from dicomnode.config import CompletionSettings, Destination, NodeSettings, Settings
    from dicomnode.node import Node

    settings = Settings(
        node=NodeSettings(host="127.0.0.1", port=free_port(), data_dir=str(data_dir)),
        completion=CompletionSettings(series_quiet_seconds=3600, release_quiet_seconds=0.5),
        enhance=enhance,
        destinations=[Destination("pacs", "STORESCP", "127.0.0.1", pacs_port)],
    )
    node = Node(settings)
    start = node.start if stop_requested is None else partial(node.start, stop_requested)
    starting = threading.Thread(target=start, daemon=True)
    starting.start()
    wait_for_port(settings.node.port, timeout=30)
    return node, starting
