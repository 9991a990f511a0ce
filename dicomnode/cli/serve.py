"""`dicomnode serve`: run the node until SIGINT/SIGTERM."""

import dataclasses
import functools
import os
from typing import Annotated

import typer

from dicomnode.cli.common import ConfigOption, configure_logging, reported_errors, settings_from
from dicomnode.cli.stopping import StopSignals, run_until_stopped


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
    """Receive, queue and forward until stopped.

    node.listener_processes processes accept on node.port (default 1; 0: one per core, at
    most 4, so several senders at once use every core); they start, stop and restart with the
    node.
    Ctrl-C or SIGTERM stops cleanly (waiting up to node.stop_timeout_seconds for the work in
    progress); a second one exits at once.
    """
    # Received instances are patient data: files 0640, folders 0750, whatever the login's umask.
    os.umask(0o027)
    settings = settings_from(config)
    if shared_data_dir:
        node_settings = dataclasses.replace(settings.node, shared_data_dir=True)
        settings = dataclasses.replace(settings, node=node_settings)
    configure_logging(settings.logging.level, settings.logging.third_party_level)
    from dicomnode.node import Node  # heavy imports only for the command that needs them

    signals = StopSignals()
    with reported_errors():
        # The receiver processes (node.listener_processes) log as this one does.
        log_setup = functools.partial(
            configure_logging, settings.logging.level, settings.logging.third_party_level
        )
        node = Node(settings, log_setup=log_setup)
        try:
            node.start(stop_requested=signals.arrived.is_set)
        except BaseException:
            node.stop()  # what did start (the receiver, the lock) ends; no "node stopped" line
            raise
    run_until_stopped(node, settings, signals)
