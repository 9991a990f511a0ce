"""The garbage collector, set for a node that keeps a large heap for months.

Once started, a node with its models holds ~600,000 objects the collector tracks (TensorFlow,
Keras, pydicom's and highdicom's tables, SQLAlchemy, pynetdicom), and all of them live as long as
the process. CPython's default thresholds (700, 10, 10) make a full collection walk every one of
them whenever enough young objects have survived: ~0.3 s each on a 2-core machine, with the
interpreter lock held, so the receiving, sending and finishing threads all stall meanwhile. A
300-image job allocates a few million objects and triggered two or three such walks (0.66 s of
its 21 s); so did the metrics SR (~0.35 s of its 1.9 s).

`settle` moves what exists after start-up to the permanent generation (`gc.freeze`: a full
collection no longer walks it) and collects the young generation every `YOUNG_OBJECTS`
allocations instead of 700, so that fewer of a job's short-lived objects reach the older
generations. Objects are still freed by their reference counts as before; only garbage in
reference cycles waits a little longer. A frozen object that later became garbage in a cycle
would never be collected: what start-up leaves is meant to stay, so at worst that is a
one-time leak.
"""

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_OBJECTS = 50_000

Thresholds = tuple[int, int, int]


def settle() -> Thresholds:
    """Freeze the heap as it is now (collected first) and raise the young generation's
    threshold; return the thresholds before, for `unsettle`. Call once start-up is done."""
    before: Thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, before[1], before[2])
    log.debug(
        "heap settled frozen_objects=%d young_objects=%d", gc.get_freeze_count(), YOUNG_OBJECTS
    )
    return before


def unsettle(before: Thresholds) -> None:
    """Undo `settle` (a process that stops its node and goes on, as a test does)."""
    gc.unfreeze()
    gc.set_threshold(*before)
