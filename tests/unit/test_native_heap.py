"""glibc's mmap threshold, fixed so that a large instance's memory goes back to the system."""

import platform
import subprocess
import sys

import pytest

# In a fresh interpreter (its allocator untouched): a 6 MiB block mapped and freed raises glibc's
# threshold to 6 MiB, so the next 5 MiB block comes from the arena, where its memory stays
# once freed; with the threshold fixed at 4 MiB it is mapped (`hblkhd`: bytes in mapped blocks).
PROBE = """
import ctypes, os, sys
from dicomnode.native_heap import return_large_blocks

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
print(return_large_blocks())
first = bytearray(6 << 20)
del first
second = bytearray(5 << 20)
print(mallinfo2().hblkhd >= 5 << 20)
"""


def _probe(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.split()


def _glibc_with_mallinfo2() -> bool:
    name, version = platform.libc_ver()
    return name == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 33)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc >= 2.33 (mallinfo2) only")
def test_a_block_past_the_threshold_is_mapped_even_after_a_larger_one_was_freed() -> None:
    assert _probe({"PATH": "/usr/bin"}) == ["True", "True"]
    # The administrator's setting wins (here 32 MiB: nothing is set, and the 5 MiB block comes
    # from the arena).
    assert _probe({"PATH": "/usr/bin", "MALLOC_MMAP_THRESHOLD_": "33554432"}) == ["False", "False"]
    tunables = {"PATH": "/usr/bin", "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432"}
    assert _probe(tunables) == ["False", "False"]
