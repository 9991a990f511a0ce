"""What every command shares: the --config option, loading settings, mapping errors to exits,
the consoles (full width when read by a script) and the database as admin commands open it."""

import errno
import json
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from dicomnode.cli.logs import configure_logging as configure_logging  # every command's log
from dicomnode.cli.safe_text import shown
from dicomnode.config import Settings, load_settings
from dicomnode.errors import ConfigError, DicomNodeError

if TYPE_CHECKING:
    from dicomnode.db import Database

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (default: $DICOMNODE_CONFIG, else config/dicomnode.toml, "
        "else built-in defaults).",
        dir_okay=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]

# Wide enough for any value on one line: a script reading our output gets whole UIDs, paths and
# errors, never a column cut to 80 characters with an ellipsis or a value wrapped in two.
_WIDE = 100_000

console = Console()
error_console = Console(stderr=True)


def make_wide(wide: bool = True) -> bool:
    """Print every value whole (`--wide`); stdout or stderr that is not a terminal always is."""
    for each in (console, error_console):
        if wide or not each.is_terminal:
            each.width = _WIDE
    return wide


make_wide(False)


def is_wide() -> bool:
    """Whether stdout shows values whole (so a listing need not shorten its long columns)."""
    return console.width >= _WIDE


WideOption = Annotated[
    bool,
    typer.Option(
        "--wide",
        callback=make_wide,
        help="Never shorten or wrap values (always so when the output is not a terminal).",
    ),
]


def print_json(data: Any) -> None:
    """What `--json` prints: one indented document on stdout."""
    print(json.dumps(data, indent=2))


# `dicomnode --debug ...`: a failure also prints its traceback (set by the root callback).
debug = False


def report_error(message: str) -> None:
    """One `error: ...` line on stderr (a command that goes on after it, or `fail`)."""
    error_console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    report_error(message)
    raise typer.Exit(code)


def writable_folder(folder: Path) -> None:
    """Make `folder` (and its parents) and check that a file can be written in it: OSError
    names it, before a command's work rather than after it."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:  # named after the probe's file: name the folder
        raise type(exc)(exc.errno, f"cannot write there: {exc.strerror}", str(folder)) from None


def os_error_text(exc: OSError) -> str:
    """An OS error as one line naming the file: "cannot write /x/y: Permission denied"."""
    what = f" {exc.filename}" if exc.filename else ""
    return f"operating system error{what}: {exc.strerror or exc}"


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn our errors, and the operating system's, into one readable line and the documented
    exit code; with --debug the traceback comes first."""
    try:
        yield
    except (DicomNodeError, OSError) as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, ConfigError):
            fail(str(exc), EXIT_USAGE)
        fail(os_error_text(exc) if isinstance(exc, OSError) else str(exc))
    except Exception as exc:
        from dicomnode.db.engine import damaged_advice  # SQLAlchemy: not for `--help`
        from dicomnode.db.failures import database_damaged, database_said

        said = database_said(exc)
        if said is None:
            raise
        if debug:
            traceback.print_exc()
        damage = database_damaged(exc)
        if damage is not None:  # waiting will not mend it: say what will
            fail(damaged_advice(_database_file or "the node's database", damage), EXIT_USAGE)
        fail(f"the database failed: {said} (try again)")


# The SQLite file an admin command opened (`node_database`): named when it proves damaged.
_database_file: str | None = None


def settings_from(config: Path | None) -> Settings:
    with reported_errors():
        return load_settings(config)


def node_database(settings: Settings, *, read_only: bool) -> "Database":
    """The node's database for an admin command. Never created here (only `serve` does): a
    missing one is "no database at ..." (exit 2); `read_only` commands cannot write to it."""
    from dicomnode.db import open_database

    global _database_file
    with reported_errors():
        database = open_database(
            settings.node.effective_database_url, create=False, read_only=read_only
        )
    _database_file = str(database.file) if database.file else None
    return database
