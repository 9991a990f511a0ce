"""The garbage collector, set for a node that keeps a large heap for months.

Once started, a node with its models holds ~600,000 objects the collector tracks (TensorFlow,
Keras, pydicom's and highdicom's tables, SQLAlchemy, pynetdicom), and nearly all of them live as
long as the process. CPython's default thresholds (700, 10, 10) make a full collection walk every
one of them whenever enough young objects have survived: ~0.3 s each on a 2-core machine, with
the interpreter lock held, so the receiving, sending and finishing threads all stall meanwhile.
In-process, a 300-image job triggered two or three such walks (0.66 s of the 0.77 s the
collector took in it), and building its metrics SR alone took 1.51 s without the collector
against 1.86 s with it.

`settle` moves what exists once start-up is done to the permanent generation (`gc.freeze`: a full
collection no longer walks it) and collects the young generation every `YOUNG_OBJECTS`
allocations instead of 700, so that fewer of a job's short-lived objects reach the older
generations (the collector then took 0.14-0.18 s in the same job). Objects are still freed by
their reference counts as before; only garbage in reference cycles waits a little longer (a job
leaves ~0.2 MB of it). A frozen object that later becomes garbage in a cycle is not collected:
start-up's objects are meant to stay, but the few of an association or a send that was in
progress when the node settled are frozen too, a one-time leak of a few kilobytes.
"""

import gc
import logging
import threading

log = logging.getLogger(__name__)

YOUNG_OBJECTS = 50_000


class _Settled:
    """Who has settled the heap: the process's collector is one, its nodes may be several (as
    in a test), and the last to unsettle restores it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.before = gc.get_threshold()


_SETTLED = _Settled()


def settle() -> None:
    """Freeze the heap as it is now (collected first) and raise the young generation's
    threshold, unless another holder already has. Call once start-up is done."""
    with _SETTLED.lock:
        _SETTLED.holders += 1
        if _SETTLED.holders > 1:
            return
        _SETTLED.before = gc.get_threshold()
        gc.collect()
        gc.freeze()
        _, middle, old = _SETTLED.before
        gc.set_threshold(YOUNG_OBJECTS, middle, old)
        log.debug(
            "heap settled frozen_objects=%d young_objects=%d", gc.get_freeze_count(), YOUNG_OBJECTS
        )


def unsettle() -> None:
    """Undo `settle` once its last holder calls this (a process that stops its node and goes
    on, as a test does)."""
    with _SETTLED.lock:
        if _SETTLED.holders == 0:
            return
        _SETTLED.holders -= 1
        if _SETTLED.holders == 0:
            gc.unfreeze()
            gc.set_threshold(*_SETTLED.before)
