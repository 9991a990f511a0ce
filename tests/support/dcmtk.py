"""Running DCMTK tools the way the tests and benchmarks need them (TCP_NODELAY set)."""

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path


def peer_env() -> dict[str, str]:
    """DCMTK and Orthanc stall ~40 ms per instance on loopback without TCP_NODELAY=1."""
    return {**os.environ, "TCP_NODELAY": "1"}


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
    targets = [str(files)] if isinstance(files, Path) else [str(f) for f in files]
    scan = ["+sd", "+r"] if isinstance(files, Path) and files.is_dir() else []
    return subprocess.run(
        [
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
        ],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
