"""What every command shares: the --config option, loading settings, mapping errors to exits."""

import logging
import ssl
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from dicomnode.cli.safe_text import install_log_filter, shown
from dicomnode.config import Settings, load_settings
from dicomnode.errors import ConfigError, DicomNodeError

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

console = Console()
error_console = Console(stderr=True)


# `dicomnode --debug ...`: a failure also prints its traceback (set by the root callback).
debug = False


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _os_error(exc: OSError) -> str:
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
        fail(_os_error(exc) if isinstance(exc, OSError) else str(exc))


def settings_from(config: Path | None) -> Settings:
    with reported_errors():
        return load_settings(config)


def _drop_tls_tracebacks(record: logging.LogRecord) -> bool:
    # pynetdicom logs a failed client handshake twice, once with a traceback; the reason is in
    # its other line and in our delivery error, which names the destination.
    return not (record.exc_info and isinstance(record.exc_info[1], ssl.SSLError))


def configure_logging(level: str) -> None:
    """One line per event on stderr: time, level, logger, message (fields as key=value).

    Every record, ours and the libraries', has its control characters escaped (a newline in a
    UID cannot forge a line), and Python warnings (pydicom's) become log records too.
    """
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    install_log_filter()
    logging.captureWarnings(True)
    # pynetdicom narrates every PDU at INFO; an operator wants our lines, and its problems.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("pynetdicom.transport").addFilter(_drop_tls_tracebacks)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("pylibjpeg").setLevel(logging.WARNING)
    # pydicom logs a decoder failure with a traceback but without saying which instance; ours
    # says it (ImageDeclined names the SOP Instance UID and lands in the job's details).
    # pydicom sets its logger's level when first imported, so import it before overriding.
    import pydicom.config  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
