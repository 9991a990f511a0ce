"""Peers that never answer, on loopback: one whose TCP connect times out, one that takes the
connection and then says nothing (no A-ASSOCIATE-AC within the ACSE timeout)."""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def unanswered_connect() -> Iterator[int]:
    """A port whose connect() times out: a listener with a backlog of 0, already full, that
    never accepts (Linux then drops further SYNs, as a firewall would)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        yield port


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
