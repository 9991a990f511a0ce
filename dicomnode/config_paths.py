"""Relative paths in a settings file mean "next to this file", wherever the command runs from.

Part of the settings layer (only `config.py` calls it). `dicomnode jobs list -c /etc/dn/node.toml`
run from any folder must find the database the node uses; a relative `data_dir` read against the
working directory would point somewhere else (and, before read-only opening, create an empty
database there). Paths from the environment and built-in defaults stay relative to the working
directory: a shell resolves them there too.
"""

import re
from pathlib import Path
from typing import Any

# Every setting that holds a file or folder, by section ("destinations": each destination).
PATH_SETTINGS: dict[str, tuple[str, ...]] = {
    "node": ("data_dir", "tls_certificate", "tls_private_key", "tls_ca_certificates"),
    "enhance": ("model_dir",),
    "destinations": ("tls_ca_certificates", "tls_certificate", "tls_private_key"),
}
# Database URLs whose file part is a path: `sqlite:///relative.db` (four slashes: absolute).
URL_SETTINGS: dict[str, tuple[str, ...]] = {"node": ("database_url",)}

_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")


def _anchored(value: str, folder: Path) -> str:
    """`value` as written if empty or absolute (`~` counts), else the path under `folder`."""
    if value == "" or Path(value).expanduser().is_absolute():
        return value
    return str(folder / value)


def _anchored_url(url: str, folder: Path) -> str:
    match = _SQLITE_URL.match(url)
    if match is None:
        return url  # not a file database (PostgreSQL)
    scheme, database, query = match.group(1), match.group(2), match.group(3) or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return url  # in memory, or a SQLite URI the user wrote out in full
    return f"{scheme}{_anchored(database, folder)}{query}"


def anchored_paths(section: str, values: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """`values` of `section` as read from `config_file`, relative paths made absolute under the
    file's folder; values of the wrong type are left for validation to name."""
    folder = config_file.expanduser().absolute().parent
    anchored = dict(values)
    for key in PATH_SETTINGS.get(section, ()):
        if isinstance(anchored.get(key), str):
            anchored[key] = _anchored(anchored[key], folder)
    for key in URL_SETTINGS.get(section, ()):
        if isinstance(anchored.get(key), str):
            anchored[key] = _anchored_url(anchored[key], folder)
    return anchored
