"""`dicomnode serve`: run the node until SIGINT/SIGTERM."""

import signal
import threading

from dicomnode.cli.common import ConfigOption, configure_logging, reported_errors, settings_from


def serve(config: ConfigOption = None) -> None:
    """Receive, queue and forward until stopped (Ctrl-C or SIGTERM stop it cleanly)."""
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
