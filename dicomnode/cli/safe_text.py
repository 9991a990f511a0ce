"""Text that came from the wire, made safe for a terminal and for a log line.

A header value, a UID or an AE title is whatever a caller sent: `[link=...]` or `[/x]` is rich
markup (a crash or a clickable link in `jobs list`), an ESC sequence drives the terminal, and a
newline forges a log line of its own. Everything the CLI prints and every log record goes
through here: control characters (and the Unicode ones that reorder or break lines) are shown
escaped (`\\n`, `\\x1b`), markup is shown literally.
"""

import logging
import re
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

from rich.markup import escape

from dicomnode.warning_subject import warning_subject

# C0, DEL, C1, line/paragraph separators and the bidirectional controls ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A quoted value in a library's warning ('1970-01-01'): header values are PHI, keep them out.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def printable(text: object) -> str:
    """`text` on one line, each control character shown as its escape (`\\n`, `\\x1b`)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def shown(text: object) -> str:
    """`text` for a rich console: printable and with its markup shown literally."""
    return escape(printable(text))


def _exception_text(te: traceback.TracebackException) -> list[str]:
    """A traceback as Python prints it, each exception's message kept to one line."""
    lines: list[str] = []
    if te.__cause__ is not None:
        lines += _exception_text(te.__cause__)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif te.__context__ is not None and not te.__suppress_context__:
        lines += _exception_text(te.__context__)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if te.stack:
        lines += ["Traceback (most recent call last):\n", *te.stack.format()]
    lines += [printable(line.rstrip("\n")) + "\n" for line in te.format_exception_only()]
    return lines


# A library warning said again within this long, word for word (its subject too), is dropped.
# Python would say it once per place in the library's code, but every `catch_warnings` block
# that changes the filters (ours keep quoted values out) makes it forget what it said: one bad
# header then gave a line per image and method, 52 for a 24-slice series.
WARNING_REPEAT_SECONDS = 600.0
_WARNINGS_REMEMBERED = 512  # the newest; an older one is said again


class OneLinePerRecord(logging.Filter):
    """Escape control characters in every record's message and exception message.

    Set on the handler, so it sees the records of every logger (pynetdicom's, pydicom's, the
    warnings module's) after they are made. Library warnings keep their first line, without
    quoted values, end with the instance being read when they were issued, if any
    (`warning_subject`), and are not said twice within WARNING_REPEAT_SECONDS.
    """

    def __init__(self) -> None:
        super().__init__()
        self._warned: OrderedDict[str, float] = OrderedDict()  # message -> when said
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "py.warnings":
            message = _QUOTED.sub("(value)", message.strip().split("\n", 1)[0])
            if subject := warning_subject():  # the instance it is about, when one was read
                message = f"{message} ({subject})"
            if self._said_lately(message):
                return False
        record.msg, record.args = printable(message), None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            te = traceback.TracebackException.from_exception(record.exc_info[1])
            record.exc_text = "".join(_exception_text(te)).rstrip("\n")
        return True

    def _said_lately(self, warning: str) -> bool:
        """Whether `warning` was logged within WARNING_REPEAT_SECONDS; remembers it if not."""
        now = time.monotonic()
        with self._lock:
            said = self._warned.get(warning)
            if said is not None and now - said < WARNING_REPEAT_SECONDS:
                return True
            self._warned[warning] = now
            self._warned.move_to_end(warning)
            if len(self._warned) > _WARNINGS_REMEMBERED:
                self._warned.popitem(last=False)
            return False


def install_log_filter(logger: Any = None) -> None:
    """Put the filter on every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, OneLinePerRecord) for f in handler.filters):
            handler.addFilter(OneLinePerRecord())
