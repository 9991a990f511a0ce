"""What `serve` and `worker` refuse to start with that the settings alone show: a model file
the configured methods lack, a TLS file that is not what its setting says. `config show` runs the
same checks, so an admin's check before a restart says what the restart would; the ports, the
data_dir's lock, the spool and database being one pair and the database's layout generation
are looked at by the start alone, which opens the database (another program may hold the
others until then)."""

from dicomnode.config import Settings
from dicomnode.dicom.tls import client_tls_args, server_context
from dicomnode.registry import check_models


def check_files(settings: Settings, *, listener: bool, forwarding: bool) -> None:
    """ConfigError naming the setting and the file, for the files a process would use: the
    models when its workers enhance a part some destination takes (`Settings.parts_sent`), the
    listener's TLS files (`listener`), every destination's (`forwarding`). Reads them all now,
    before anything is made in the data_dir."""
    if settings.worker.workers and "derived" in settings.parts_sent():
        check_models(settings)
    if listener:
        server_context(settings.node)
    for destination in settings.destinations if forwarding else []:
        client_tls_args(destination, settings.destination_key(destination))
