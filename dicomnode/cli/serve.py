"""`dicomnode serve`: run the node until SIGINT/SIGTERM."""

import dataclasses
import os
import signal
import threading
from typing import Annotated

import typer

from dicomnode.cli.common import ConfigOption, configure_logging, reported_errors, settings_from


def serve(
    config: ConfigOption = None,
    shared_data_dir: Annotated[
        bool,
        typer.Option(
            "--shared-data-dir",
            help="Share data_dir with other listeners on purpose (node.shared_data_dir); "
            "without it a second node on the same data_dir is refused.",
        ),
    ] = False,
) -> None:
    """Receive, queue and forward until stopped (Ctrl-C or SIGTERM stop it cleanly)."""
    # Received instances are patient data: files 0640, folders 0750, whatever the login's umask.
    os.umask(0o027)
    settings = settings_from(config)
    if shared_data_dir:
        node_settings = dataclasses.replace(settings.node, shared_data_dir=True)
        settings = dataclasses.replace(settings, node=node_settings)
    configure_logging(settings.logging.level)
    from dicomnode.node import Node  # heavy imports only for the command that needs them

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with reported_errors():
        node = Node(settings)
        try:
            node.start()
        except BaseException:
            node.stop()  # what did start (the receiver, the lock) ends; no "node stopped" line
            raise
    stop.wait()
    node.stop()
