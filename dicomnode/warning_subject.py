"""What a library's warning is about: the instance being read when it was issued.

pydicom warns about damaged or odd input (pixel data with excess padding, an invalid value) with
the line of its own code, not the file it read: an operator could not tell which instance to
look at. Code that reads an instance says so (`about`); the log's filter adds it to each warning
issued meanwhile in the same thread (`cli.safe_text`). A context variable: each thread, and each
job's worker, has its own. And where a library's warnings must not be shown at all, one block at
a time (`user_warnings_ignored`).
"""

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_SUBJECT: ContextVar[str] = ContextVar("warning_subject", default="")


@contextmanager
def about(subject: str) -> Iterator[None]:
    """Warnings issued within are about `subject` too (`sop=...`), after any outer one."""
    token = _SUBJECT.set(f"{_SUBJECT.get()} {subject}".strip())
    try:
        yield
    finally:
        _SUBJECT.reset(token)


def warning_subject() -> str:
    """What the code running in this thread now reads ("" when it said nothing)."""
    return _SUBJECT.get()


# `warnings.catch_warnings` swaps the process-wide filter list and puts the old one back on exit:
# two blocks that overlap in different threads (two jobs deriving at once) can leave the inner
# block's "ignore" installed for good, and every library warning after it would go unsaid.
_FILTERS = threading.RLock()


@contextmanager
def user_warnings_ignored() -> Iterator[None]:
    """Library UserWarnings issued within are not shown (pydicom's and highdicom's quote header
    values, which are PHI, or warn about bytes the node keeps as stored). One such block at a
    time in the process (`_FILTERS`): warnings elsewhere meanwhile are not shown either."""
    with _FILTERS, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
