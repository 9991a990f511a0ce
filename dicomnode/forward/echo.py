"""C-ECHO as an SCU: the admin's first check that a destination is reachable."""

from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from dicomnode.config import Destination, Settings
from dicomnode.dicom.release import end
from dicomnode.dicom.tls import client_tls_args
from dicomnode.errors import ForwardError
from dicomnode.forward.associate import open_association


def echo(destination: Destination, settings: Settings) -> int:
    """Return the peer's C-ECHO status; raise ForwardError when no association is possible,
    saying why in one line (ConfigError when one of the destination's TLS files is unusable)."""
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    tls_args = client_tls_args(destination, settings.destination_key(destination))
    assoc = open_association(destination, settings, [build_context(Verification)], where, tls_args)
    try:
        response = assoc.send_c_echo()
    finally:
        end(assoc)
    if "Status" not in response:
        raise ForwardError(f"{where} gave no C-ECHO response", transient=True)
    return int(response.Status)
