"""The `dicomnode` command: its verbs read like an admin's sentence (`dicomnode jobs retry 42`).

Exit codes: 0 ok, 1 failure, 2 usage or configuration error. Heavy libraries (SQLAlchemy,
pynetdicom, later TensorFlow) are imported inside the commands, so `--help` is instant.
"""

import typer

from dicomnode import __version__
from dicomnode.cli import common, config_cmd, jobs
from dicomnode.cli.common import WideOption
from dicomnode.cli.doctor import doctor
from dicomnode.cli.echo import echo
from dicomnode.cli.enhance import enhance
from dicomnode.cli.evaluate import evaluate
from dicomnode.cli.purge import purge
from dicomnode.cli.serve import serve
from dicomnode.cli.train import train
from dicomnode.cli.worker import worker

app = typer.Typer(
    name="dicomnode",
    help="A DICOM node: receive studies, forward them to PACS at once, enhance them and send "
    "a derived series where its own numbers say it helps.",
    no_args_is_help=True,
    # Markdown: a paragraph's line breaks are the docstring's, not the help's (with "rich" a
    # command's summary in `dicomnode --help` broke where its docstring did); `code` styled.
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"dicomnode {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    wide: WideOption = False,
    debug: bool = typer.Option(
        False, "--debug", help="On a failure, print the traceback too (for a bug report)."
    ),
) -> None:
    common.debug = debug


app.command()(serve)
app.command()(worker)
app.command()(echo)
app.command()(doctor)
app.command()(purge)
app.command()(enhance)
app.command()(train)
app.command()(evaluate)
app.add_typer(jobs.app, name="jobs")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    # A last net for errors a command did not map itself (an OS error in the middle of a
    # listing): one line and the documented exit code here too, the traceback with --debug.
    try:
        with common.reported_errors():
            app()
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
