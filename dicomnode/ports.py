"""Whether a TCP port can be listened on, asked before anything is made in the data_dir."""

import errno
import socket

from pynetdicom.transport import AddressInformation


def check_port_free(address: tuple[str, int], family: socket.AddressFamily | None = None) -> None:
    """OSError if `address` cannot be listened on (another program listens there, a port
    below 1024 without the right, an address not of this host, a name that does not resolve).

    Asked at start, before the data_dir, spool and database are made, so that a start refused
    for its port leaves nothing behind; and before a shared (SO_REUSEPORT) port is bound, which
    would otherwise let a second node of the same user split this one's connections without a
    word. The address is resolved as the DICOM listener resolves it (pynetdicom: a name's first
    IPv4 address, else its first IPv6 one) unless `family` is given (the HTTP endpoint: IPv4).
    """
    host, port = address
    if family is None:
        resolved = AddressInformation(host, port)
        family, bound = resolved.address_family, resolved.as_tuple
    else:
        bound = (host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no user
        probe.bind(bound)


def why_not(exc: OSError, setting: str) -> str:
    """What to do about a port that cannot be listened on, for the refusal's last words."""
    if exc.errno == errno.EADDRINUSE:
        return f"setting {setting}: another program, or another node, uses it?"
    if exc.errno == errno.EACCES:
        return f"setting {setting}: a port below 1024 needs root or CAP_NET_BIND_SERVICE"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "the host setting names no address of this host"
    if isinstance(exc, socket.gaierror):
        return "the host setting does not resolve"
    return f"setting {setting}"
