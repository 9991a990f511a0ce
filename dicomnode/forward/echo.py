"""C-ECHO as an SCU: the admin's first check that a destination is reachable."""

from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from dicomnode.config import Destination, Settings
from dicomnode.dicom.release import end
from dicomnode.dicom.tls import client_tls_args
from dicomnode.errors import DicomNodeError, ForwardError
from dicomnode.forward.associate import open_association


def echo(destination: Destination, settings: Settings, where: str | None = None) -> int:
    """Return the peer's C-ECHO status; raise ForwardError when no association is possible,
    saying why in one line (ConfigError when one of the destination's TLS files is unusable).
    `where`: how the errors name the peer (default `Destination.described`, as a delivery's
    errors do)."""
    where = where or destination.described
    tls_args = client_tls_args(destination, settings.destination_key(destination))
    assoc = open_association(destination, settings, [build_context(Verification)], where, tls_args)
    try:
        response = assoc.send_c_echo()
    finally:
        end(assoc)
    if "Status" not in response:
        raise ForwardError(f"{where} gave no C-ECHO response", transient=True)
    return int(response.Status)


def why_unanswered(destination: Destination, settings: Settings) -> ForwardError | None:
    """None when the destination answers a C-ECHO (whatever its status); else why not: a
    transient ForwardError when it cannot be reached now (refused, timed out, rejected for
    now), a permanent one when the echo cannot tell (the peer takes no C-ECHO, a TLS file we
    cannot use)."""
    try:
        echo(destination, settings)
    except ForwardError as exc:
        return exc
    except DicomNodeError as exc:
        return ForwardError(str(exc), transient=False)
    return None
