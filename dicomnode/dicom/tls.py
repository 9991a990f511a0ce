"""TLS for DICOM associations (PS3.15 Annex B, TLS 1.2 or later): SSLContexts from the settings.

Every PEM file is read here, so a file that is not what its setting says (not PEM, a key that does
not match its certificate, an encrypted key) becomes a ConfigError naming the setting and the file.
Client contexts also remember why their connection or handshake failed: pynetdicom only logs that
reason and reports "not established", and an operator needs it in the delivery's error.
"""

import re
import ssl
from pathlib import Path
from typing import Any

from dicomnode.config import Destination, NodeSettings
from dicomnode.errors import ConfigError

# PS3.15 Annex B, the BCP 195 TLS profiles: nothing older than TLS 1.2.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and a service would hang there.
    raise ConfigError("encrypted private keys are not supported")


def _load_ca(context: ssl.SSLContext, path: str, key: str) -> None:
    try:
        context.load_verify_locations(cafile=str(Path(path).expanduser()))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"setting {key}: {path!r} is not a readable PEM certificate file: {describe(exc)}"
        ) from None


def _load_key_pair(
    context: ssl.SSLContext, certificate: str, private_key: str, prefix: str
) -> None:
    # The certificate alone first, so an error names the file that is wrong.
    _load_ca(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), certificate, f"{prefix}tls_certificate")
    try:
        context.load_cert_chain(
            str(Path(certificate).expanduser()),
            str(Path(private_key).expanduser()),
            password=_no_password,
        )
    except ConfigError as exc:
        raise ConfigError(f"setting {prefix}tls_private_key: {private_key!r}: {exc}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"setting {prefix}tls_private_key: {private_key!r} is not an unencrypted PEM private "
            f"key matching {prefix}tls_certificate {certificate!r}: {describe(exc)}"
        ) from None


def server_context(node: NodeSettings) -> ssl.SSLContext | None:
    """The listener's context, or None for plain TCP (no node.tls_certificate).

    With node.tls_ca_certificates a caller's certificate is requested and verified; with
    node.tls_require_client_certificate a caller without one is refused (mutual TLS).
    """
    if not node.tls_certificate:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_key_pair(context, node.tls_certificate, node.tls_private_key, "node.")
    if node.tls_ca_certificates:
        _load_ca(context, node.tls_ca_certificates, "node.tls_ca_certificates")
        context.verify_mode = (
            ssl.CERT_REQUIRED if node.tls_require_client_certificate else ssl.CERT_OPTIONAL
        )
    return context


class _RecordingSocket(ssl.SSLSocket):
    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:  # refused or timed out before any handshake
            context = self.context
            if isinstance(context, ClientContext) and context.handshake_error is None:
                context.connect_error = exc
            raise

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            context = self.context
            if isinstance(context, ClientContext):
                context.handshake_error = exc
            raise


class ClientContext(ssl.SSLContext):
    """A client SSLContext for one association that keeps the handshake's failure, if any."""

    sslsocket_class = _RecordingSocket
    handshake_error: OSError | None = None
    connect_error: OSError | None = None  # the TCP connection failed: no handshake happened


def client_tls_args(destination: Destination, key: str) -> tuple[ClientContext, str] | None:
    """pynetdicom's `tls_args` for one association to `destination` (None: plain TCP).

    The peer's certificate must chain to destination.tls_ca_certificates (else the system trust
    store) and carry its server name; our client certificate is presented when configured. A new
    context per association: the files are read again, so renewed certificates need no restart.
    `key` names the destination in errors (e.g. "destinations[0]").
    """
    if not destination.tls:
        return None
    context = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = MINIMUM_VERSION
    if destination.tls_ca_certificates:
        _load_ca(context, destination.tls_ca_certificates, f"{key}.tls_ca_certificates")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if destination.tls_certificate:
        _load_key_pair(context, destination.tls_certificate, destination.tls_private_key, f"{key}.")
    return context, destination.server_name


def handshake_failure(tls_args: tuple[ClientContext, str] | None) -> str | None:
    """Why the client handshake of an association failed, or None if it did not fail."""
    if tls_args is None or tls_args[0].handshake_error is None:
        return None
    return describe(tls_args[0].handshake_error)


def describe(exc: BaseException) -> str:
    """An SSL error as an operator reads it: 'certificate verify failed: self-signed ...'."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    # "[SSL] PEM lib (_ssl.c:3926)" -> "PEM lib": the library's tags say nothing to an operator
    text = re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return text or type(exc).__name__
