"""C-ECHO as an SCU: the admin's first check that a destination is reachable."""

from pynetdicom.sop_class import Verification

from dicomnode.config import Destination, Settings
from dicomnode.dicom.association import CONNECTION_TUNING_HANDLER, configure_ae
from dicomnode.dicom.tls import client_tls_args, handshake_failure
from dicomnode.errors import ForwardError


def echo(destination: Destination, settings: Settings) -> int:
    """Return the peer's C-ECHO status; raise ForwardError when no association is possible
    (ConfigError when one of the destination's TLS files is unusable)."""
    ae = configure_ae(settings.node.ae_title, settings.network, settings.node.max_pdu_size)
    ae.add_requested_context(Verification)
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    tls_args = client_tls_args(destination, settings.destination_key(destination))
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[CONNECTION_TUNING_HANDLER],
        tls_args=tls_args,
    )
    if not assoc.is_established:
        tls_reason = handshake_failure(tls_args)
        if tls_reason is not None:
            raise ForwardError(f"TLS handshake with {where} failed: {tls_reason}", transient=True)
        state = "rejected the association" if assoc.is_rejected else "is unreachable"
        raise ForwardError(f"{where} {state}", transient=True)
    try:
        response = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in response:
        raise ForwardError(f"{where} gave no C-ECHO response", transient=True)
    return int(response.Status)
