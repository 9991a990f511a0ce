"""Running DCMTK tools the way the tests and benchmarks need them (TCP_NODELAY set)."""

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path


def peer_env() -> dict[str, str]:
    """DCMTK and Orthanc stall ~40 ms per instance on loopback without TCP_NODELAY=1."""
    return {**os.environ, "TCP_NODELAY": "1"}


def _storescu_command(
    port: int, files: Sequence[Path] | Path, called_aet: str, calling_aet: str, extra: Sequence[str]
) -> list[str]:
    targets = [str(files)] if isinstance(files, Path) else [str(f) for f in files]
    scan = ["+sd", "+r"] if isinstance(files, Path) and files.is_dir() else []
    return [
        "storescu",
        "-aec",
        called_aet,
        "-aet",
        calling_aet,
        *scan,
        *extra,
        "127.0.0.1",
        str(port),
        *targets,
    ]


def storescu(
    port: int,
    files: Sequence[Path] | Path,
    *,
    called_aet: str = "DICOMNODE",
    calling_aet: str = "STORESCU",
    extra: Sequence[str] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Send files (or a folder, recursively) with one association; return the finished process."""
    return subprocess.run(
        _storescu_command(port, files, called_aet, calling_aet, extra),
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def storescu_at_once(
    port: int, folders: Sequence[Path], *, called_aet: str = "DICOMNODE", timeout: float = 600
) -> list[subprocess.CompletedProcess[str]]:
    """One `storescu` (one association) per folder, all started before any is waited for:
    several senders at once."""
    processes = [
        subprocess.Popen(
            _storescu_command(port, folder, called_aet, "STORESCU", ()),
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def echoscu(
    port: int, called_aet: str = "DICOMNODE", calling_aet: str = "ECHOSCU"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-aec", called_aet, "-aet", calling_aet, "127.0.0.1", str(port)],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class StoreScp:
    """DCMTK's own storescp accepting every SOP class and syntax (`+xa`): the reference receiver.
    `options` instead: `("+xi",)` a PACS that takes Implicit VR Little Endian only, the default
    syntax; `("+xa", "--abort-after")` one that aborts every association on its first C-STORE."""

    def __init__(self, out_dir: Path, options: Sequence[str] = ("+xa",)) -> None:
        from tests.support.ports import free_port

        self.out_dir = out_dir
        self.port = free_port()
        self.options = list(options)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "StoreScp":
        from tests.support.ports import wait_for_port

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            ["storescp", *self.options, "-od", str(self.out_dir), str(self.port)],
            env=peer_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)  # a test may have stopped it
            self._process.terminate()
            self._process.wait(timeout=20)
