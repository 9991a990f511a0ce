"""Whether a TCP port can be listened on, asked before anything is made in the data_dir."""

import socket


def check_port_free(address: tuple[str, int]) -> None:
    """OSError if another program listens on `address`.

    Asked at start, before the data_dir, spool and database are made, so that a start refused
    for its port leaves nothing behind; and before a shared (SO_REUSEPORT) port is bound, which
    would otherwise let a second node of the same user split this one's connections without a
    word.
    """
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no user
        probe.bind(address)
