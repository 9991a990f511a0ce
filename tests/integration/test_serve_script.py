"""scripts/serve installs only when .venv is missing or pyproject.toml changed: an offline hospital
host restarts the node without a single pip call.

The scripts run for real in a copy of the repository's scripts and pyproject.toml; `.venv` holds
stand-in `python`, `pip` and `dicomnode` programs that record their calls (a real install needs
the network, which is exactly what the script must not need when nothing changed).
"""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _recording(path: Path, log: Path) -> None:
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n')
    path.chmod(0o755)


def _checkout(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "scripts", root / "scripts")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    calls = tmp_path / "calls.log"
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for program in ("python", "pip", "dicomnode"):
        _recording(bin_dir / program, calls)
    return root, calls


def _serve(root: Path, env: dict[str, str] | None = None) -> list[str]:
    calls = root.parent / "calls.log"
    calls.unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", str(root / "scripts" / "serve"), "--config", "x.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return calls.read_text().splitlines()


def test_serve_installs_once_then_starts_offline_until_pyproject_changes(tmp_path: Path) -> None:
    root, _ = _checkout(tmp_path)

    # No stamp yet: the environment is out of date, so it installs, then starts.
    first = _serve(root)
    assert first == [
        "pip install --quiet --upgrade pip",
        "pip install --quiet -e .",
        "dicomnode serve --config x.toml",
    ]

    # Up to date: no pip call at all.
    assert _serve(root) == ["dicomnode serve --config x.toml"]

    # pyproject.toml changed (a new dependency): installs again.
    with (root / "pyproject.toml").open("a") as toml:
        toml.write("\n# changed\n")
    assert _serve(root)[-2:] == ["pip install --quiet -e .", "dicomnode serve --config x.toml"]
    assert _serve(root) == ["dicomnode serve --config x.toml"]


def test_serve_installs_when_the_command_is_missing(tmp_path: Path) -> None:
    root, _ = _checkout(tmp_path)
    _serve(root)
    (root / ".venv" / "bin" / "dicomnode").unlink()
    calls = _serve_after_reinstall(root)
    assert "pip install --quiet -e ." in calls


def _serve_after_reinstall(root: Path) -> list[str]:
    """pip stands in for the install: it puts `dicomnode` back, as `pip install -e .` would."""
    pip = root / ".venv" / "bin" / "pip"
    log = root.parent / "calls.log"
    pip.write_text(
        f'#!/bin/sh\necho "pip $*" >> {log}\n'
        f"printf '#!/bin/sh\\necho \"dicomnode $*\" >> {log}\\n' > {root}/.venv/bin/dicomnode\n"
        f"chmod 755 {root}/.venv/bin/dicomnode\n"
    )
    return _serve(root)


def test_a_moved_checkout_gets_a_new_venv(tmp_path: Path) -> None:
    """A venv's scripts name their interpreter by absolute path: after `mv`, .venv/bin/dicomnode
    said "cannot execute: required file not found" and the node never started."""
    root, _ = _checkout(tmp_path)
    _serve(root)
    moved = tmp_path / "moved"
    root.rename(moved)
    # python3 -m venv .venv, as the script runs it, makes recording stand-ins again
    tools = tmp_path / "tools"
    tools.mkdir()
    log = tmp_path / "calls.log"
    (tools / "python3").write_text(
        f'#!/bin/sh\necho "python3 $*" >> {log}\nmkdir -p .venv/bin\n'
        + "".join(
            f"printf '#!/bin/sh\\necho \"{name} $*\" >> {log}\\n' > .venv/bin/{name}\n"
            f"chmod 755 .venv/bin/{name}\n"
            for name in ("python", "pip", "dicomnode")
        )
    )
    (tools / "python3").chmod(0o755)
    calls = _serve(moved, env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"})
    assert calls == [
        "python3 -m venv .venv",
        "pip install --quiet --upgrade pip",
        "pip install --quiet -e .",
        "dicomnode serve --config x.toml",
    ]
    assert _serve(moved) == ["dicomnode serve --config x.toml"]  # and then it is at home


def test_a_checkout_reached_through_a_link_has_not_moved(tmp_path: Path) -> None:
    """/opt/dicomnode -> /opt/dicomnode-2026.12: the unit and an admin start it by either name;
    taking that for a move deleted a working .venv (and, offline, could not make a new one)."""
    root, _ = _checkout(tmp_path)
    _serve(root)
    link = tmp_path / "link"
    link.symlink_to(root)
    assert _serve(link) == ["dicomnode serve --config x.toml"]
    assert _serve(root) == ["dicomnode serve --config x.toml"]
