"""`dicomnode worker`: run jobs from the node's database, without a listener, until stopped."""

import os

from dicomnode.cli.common import (
    ConfigOption,
    configure_logging,
    reported_errors,
    settings_from,
    wait_for_stop_signal,
)


def worker(config: ConfigOption = None) -> None:
    """Claim and run jobs (enhance, forward) beside `serve`, without a listener, on this host or
    on another one that reaches the same database and spool.

    Give it the node's settings: database_url, data_dir (the same path on every host).

    Ctrl-C or SIGTERM stop it cleanly; a job of a killed worker is run again once its lease lapses.
    """
    # Derived series are patient data: files 0640, folders 0750, as `serve` writes them.
    os.umask(0o027)
    settings = settings_from(config)
    configure_logging(settings.logging.level)
    from dicomnode.node import Node  # heavy imports only for the command that needs them

    with reported_errors():
        node = Node(settings, listen=False)
        node.start()
    try:
        wait_for_stop_signal()
    finally:
        node.stop()
