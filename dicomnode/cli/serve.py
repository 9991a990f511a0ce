"""`dicomnode serve`: run the node until SIGINT/SIGTERM."""

import os
import signal
import threading

from dicomnode.cli.common import ConfigOption, configure_logging, reported_errors, settings_from


def serve(config: ConfigOption = None) -> None:
    """Receive, queue and forward until stopped (Ctrl-C or SIGTERM stop it cleanly)."""
    # Received instances are patient data: files 0640, folders 0750, whatever the login's umask.
    os.umask(0o027)
    settings = settings_from(config)
    configure_logging(settings.logging.level)
    from dicomnode.node import Node  # heavy imports only for the command that needs them

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with reported_errors():
        node = Node(settings)
        try:
            node.start()
        except OSError as exc:
            node.stop()
            raise SystemExit(
                f"error: cannot listen on {settings.node.host}:{settings.node.port}: {exc}"
            ) from None
    stop.wait()
    node.stop()
