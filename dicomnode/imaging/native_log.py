"""TF_CPP_MIN_LOG_LEVEL for the lines TensorFlow's C++ libraries print while it is imported.

TensorFlow (2.16 and later) logs through absl, and absl writes every message logged before
`absl::InitializeLog()` to stderr whatever the level (a known absl limitation): importing it
prints "oneDNN custom operations are on", "Could not find cuda drivers" and, on a GPU host, CUDA
factory registrations, even with TF_CPP_MIN_LOG_LEVEL=3. While TensorFlow is imported, the
process's stderr (file descriptor 2) goes through a pipe that drops those absl lines below the
level and passes everything else on, in order: our own log lines written meanwhile are delayed,
never lost.
"""

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# absl's prefix: severity, MMDD, time (before InitializeLog: 00:00:<epoch seconds>), thread id,
# file:line]
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def dropped(line: bytes, min_level: int) -> bool:
    """Whether an absl line is below TF_CPP_MIN_LOG_LEVEL (any other line is kept)."""
    if line.startswith(_ABSL_PREAMBLE):
        return min_level >= 1
    match = _ABSL_LINE.match(line)
    return match is not None and _SEVERITY[match.group(1)] < min_level


def _forward(pipe_fd: int, stderr_fd: int, min_level: int) -> None:
    with os.fdopen(pipe_fd, "rb") as pipe:
        for line in pipe:
            if not dropped(line, min_level):
                with contextlib.suppress(OSError):  # stderr closed: nothing to tell
                    os.write(stderr_fd, line)


@contextlib.contextmanager
def native_stderr_filtered(min_level: int) -> Iterator[None]:
    """Within the block, drop absl lines below `min_level` from file descriptor 2."""
    if min_level <= 0:
        yield
        return
    sys.stderr.flush()
    stderr_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    forwarder = threading.Thread(
        target=_forward, args=(read_fd, stderr_fd, min_level), name="native-stderr", daemon=True
    )
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr_fd, 2)  # the pipe's last write end closes: the forwarder sees its end
        forwarder.join(timeout=5)
        os.close(stderr_fd)


def tf_min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    return int(value) if value.isdigit() else 0
