"""glibc's allocator, set so that the memory a large instance used goes back to the system.

Python asks the C allocator for every buffer above 512 bytes: a PDU read whole (up to
`node.max_pdu_size`), a data set as it grows, its copy for the spool. glibc serves a block of
128 KiB or more from its own mapping and unmaps it when freed, but raises that threshold to the
size of each mapped block freed, up to 32 MiB. After the first large instance, blocks of a few
MiB come from the allocator's arenas instead (one per thread that allocates, up to 8 per
core), and glibc keeps what is freed there for the process. In a soak test (2 cores, 40 MB
instances among small series) the node's resident memory rose from 294 to ~950 MB with 70 MiB
of it in use: 584 MiB free in the arenas, of which `malloc_trim` gave back 46 MB. The growth
stops once each arena has held its largest block, so the ceiling grows with the cores and the
instance size.

A fixed threshold also turns the raising off. At 4 MiB (and the trim threshold at 8 MiB,
below), 24 instances of 18 MB sent over three associations, six times, left the node at 366 MB
instead of 484 to 536 MB; blocks below it (a CT slice's buffers) stay in the arenas, where
glibc reuses them: the ingest benchmark showed no difference beyond its noise (against Orthanc,
one sender 1.24-1.33x with it, 1.19x without; four senders 0.96-1.03x and 1.05-1.13x). An
administrator's `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` (or the same in
`GLIBC_TUNABLES`) in the environment wins. Other C libraries (musl) are left as they are.
"""

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 << 20
# Setting the mmap threshold also stops glibc raising the trim threshold with it (to twice the
# mmap threshold): left at 128 KiB, the arenas would give memory back, and fault it in again,
# after nearly every instance. Twice the mmap threshold, as glibc's own rule would set it.
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_SET_BY_ENVIRONMENT = "MALLOC_MMAP_THRESHOLD_"
_TRIM_SET_BY_ENVIRONMENT = "MALLOC_TRIM_THRESHOLD_"


def return_large_blocks() -> bool:
    """Map every block of `MMAP_THRESHOLD_BYTES` or more on its own, so that it goes back to
    the system when freed. True when set here; False on another C library, or where the
    environment already set it."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if _SET_BY_ENVIRONMENT in os.environ or "glibc.malloc.mmap_threshold" in tunables:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.debug("malloc's mmap threshold not set: mallopt refused it")
        return False
    if _TRIM_SET_BY_ENVIRONMENT not in os.environ and "glibc.malloc.trim_threshold" not in tunables:
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return True
