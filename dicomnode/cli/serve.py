"""`dicomnode serve`: run the node until SIGINT/SIGTERM."""

import os

from dicomnode.cli.common import ConfigOption, configure_logging, reported_errors, settings_from
from dicomnode.cli.stopping import StopSignals, run_until_stopped


def serve(config: ConfigOption = None) -> None:
    """Receive, queue and forward until stopped.

    Ctrl-C or SIGTERM stops cleanly (waiting up to node.stop_timeout_seconds for the work in
    progress); a second one exits at once.
    """
    # Received instances are patient data: files 0640, folders 0750, whatever the login's umask.
    os.umask(0o027)
    settings = settings_from(config)
    configure_logging(settings.logging.level, settings.logging.third_party_level)
    from dicomnode.node import Node  # heavy imports only for the command that needs them

    signals = StopSignals()
    with reported_errors():
        node = Node(settings)
        try:
            node.start()
        except OSError as exc:
            node.stop()
            raise SystemExit(
                f"error: cannot listen on {settings.node.host}:{settings.node.port}: {exc}"
            ) from None
    run_until_stopped(node, settings, signals)
