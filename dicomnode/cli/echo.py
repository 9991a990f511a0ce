"""`dicomnode echo`: C-ECHO a configured destination or any HOST:PORT."""

import time
from typing import Annotated

import typer

from dicomnode.cli.common import (
    EXIT_USAGE,
    ConfigOption,
    console,
    fail,
    reported_errors,
    settings_from,
)
from dicomnode.config import Destination
from dicomnode.errors import ConfigError


def echo(
    target: Annotated[
        str, typer.Argument(help="A destination name from the config, or HOST:PORT.")
    ],
    called_aet: Annotated[
        str, typer.Option("--called-aet", help="Called AE title when TARGET is HOST:PORT.")
    ] = "ANY-SCP",
    config: ConfigOption = None,
) -> None:
    """Check that a peer answers C-ECHO (exit 0) or say why not (exit 1)."""
    settings = settings_from(config)
    destination = settings.destination(target)
    if destination is None:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            fail(
                f"{target!r} is neither a configured destination "
                f"({', '.join(d.name for d in settings.destinations) or 'none configured'}) "
                "nor HOST:PORT",
                EXIT_USAGE,
            )
        destination = Destination(name="adhoc", ae_title=called_aet, host=host, port=int(port))
        try:
            destination.validate("target")
        except ConfigError as exc:  # an argument, not a setting: named as the command line has it
            detail = str(exc).removeprefix(f"setting {exc.setting}: ")
            fail(
                f"{'--called-aet' if exc.setting == 'target.ae_title' else target}: {detail}",
                EXIT_USAGE,
            )
    from dicomnode.forward.echo import echo as send_echo

    where = destination.peer  # the command line named the destination: its address is news
    started = time.monotonic()
    with reported_errors():
        status = send_echo(destination, settings, where)
    elapsed_ms = (time.monotonic() - started) * 1000
    if status != 0x0000:
        fail(f"C-ECHO to {where} answered status 0x{status:04X}")
    console.print(f"C-ECHO to {where}: success in {elapsed_ms:.0f} ms", highlight=False)
