"""`dicomnode worker`: run jobs from the node's database, without a listener, until stopped."""

import os

from dicomnode.cli.common import ConfigOption, configure_logging, reported_errors, settings_from
from dicomnode.cli.stopping import StopSignals, run_until_stopped


def worker(config: ConfigOption = None) -> None:
    """Claim and run jobs (enhance, forward) beside `serve`, without a listener, on this host or
    on another one that reaches the same database and spool.

    Give it the node's settings: database_url, data_dir (the same path on every host).

    Ctrl-C or SIGTERM stops cleanly (waiting up to node.stop_timeout_seconds for the jobs in
    progress); a second one exits at once, and a job of a stopped worker runs again once its
    lease lapses.
    """
    # Derived series are patient data: files 0640, folders 0750, as `serve` writes them.
    os.umask(0o027)
    settings = settings_from(config)
    configure_logging(settings.logging.level, settings.logging.third_party_level)
    from dicomnode.node import Node  # heavy imports only for the command that needs them

    signals = StopSignals()
    with reported_errors():
        node = Node(settings, listen=False)
        try:
            node.start(stop_requested=signals.arrived.is_set)
        except BaseException:
            node.stop()  # what did start (the scheduler, the endpoint) ends
            raise
    run_until_stopped(node, settings, signals)
