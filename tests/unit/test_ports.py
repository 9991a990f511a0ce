"""The port probe at start (dicomnode/ports.py): a port is looked at as the listener will bind
it, and a refusal says what to do about its cause, not always "another program uses it"."""

import errno
import socket

import pytest

from dicomnode.ports import check_port_free, why_not


def test_a_port_another_socket_listens_on_is_refused_as_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as refused:
            check_port_free(("127.0.0.1", port))
        with pytest.raises(OSError):
            check_port_free(("localhost", port))  # resolved as pynetdicom resolves it
    assert refused.value.errno == errno.EADDRINUSE
    assert why_not(refused.value, "node.port") == (
        "setting node.port: another program, or another node, uses it?"
    )
    check_port_free(("localhost", port))  # free again


def test_an_address_of_no_interface_here_is_named_as_such() -> None:
    with pytest.raises(OSError) as refused:
        check_port_free(("192.0.2.1", 0))  # TEST-NET-1: on no host
    assert refused.value.errno == errno.EADDRNOTAVAIL
    assert why_not(refused.value, "node.port") == "the host setting names no address of this host"


def test_a_privileged_port_without_the_right_says_which_right() -> None:
    denied = PermissionError(errno.EACCES, "Permission denied")
    assert "below 1024 needs root or CAP_NET_BIND_SERVICE" in why_not(denied, "node.port")
