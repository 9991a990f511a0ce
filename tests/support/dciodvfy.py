"""dciodvfy (dicom3tools), the validator every file we write must pass."""

import subprocess
from pathlib import Path


def dciodvfy_errors(path: Path) -> set[str]:
    """The distinct "Error" lines dciodvfy reports for one file (warnings are not counted)."""
    # It quotes values in the file's own character set: Latin-1 bytes are not UTF-8.
    result = subprocess.run(
        ["dciodvfy", str(path)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    lines = (result.stdout + result.stderr).splitlines()
    return {line for line in lines if line.startswith("Error")}
