"""What every command shares: the --config option, loading settings, mapping errors to exits."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from dicomnode.cli.logs import configure_logging as configure_logging  # every command's log
from dicomnode.cli.safe_text import shown
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


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn our errors into one readable line and the documented exit code."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except DicomNodeError as exc:
        fail(str(exc))


def settings_from(config: Path | None) -> Settings:
    with reported_errors():
        return load_settings(config)
