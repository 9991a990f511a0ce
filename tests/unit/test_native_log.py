"""Which lines of TensorFlow's C++ libraries TF_CPP_MIN_LOG_LEVEL drops (imaging.native_log)."""

import pytest

from dicomnode.imaging.native_log import dropped

INFO = b"I0000 00:00:1795994797.223236   29255 port.cc:153] oneDNN custom operations are on.\n"
WARNING = b"W1130 08:12:03.123456    42 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
ERROR = b"E0000 00:00:1795994813.689807   29653 cuda_platform.cc:52] failed call to cuInit\n"
PREAMBLE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
)
OURS = b"2026-11-30T08:12:03.123Z INFO dicomnode.node node started port=11112\n"
TRACEBACK = b"Traceback (most recent call last):\n"

# (line, TF_CPP_MIN_LOG_LEVEL) → dropped
TABLE = [
    (INFO, 0, False),
    (INFO, 1, True),
    (INFO, 3, True),
    (WARNING, 1, False),
    (WARNING, 2, True),
    (ERROR, 2, False),
    (ERROR, 3, True),
    (PREAMBLE, 0, False),
    (PREAMBLE, 1, True),
    (OURS, 3, False),
    (TRACEBACK, 3, False),
]


@pytest.mark.parametrize(("line", "level", "expected"), TABLE)
def test_only_absl_lines_below_the_level_are_dropped(
    line: bytes, level: int, expected: bool
) -> None:
    assert dropped(line, level) is expected
