"""A store waited for until its deadline (`receive/store_deadline.py`): its own error comes
back, a store that hangs is told at the deadline and finishes behind, and one that could not
even begin is never run."""

import logging
import threading

import pytest

from dicomnode.receive.store_deadline import BYTES_PER_EXTRA_SECOND, StoreDeadline, StoreTimedOut


def test_a_store_that_ends_in_time_returns_or_raises_its_own_error() -> None:
    deadline = StoreDeadline(threads=2, seconds=5)
    done: list[int] = []
    deadline.run(lambda: done.append(1), 100, "1.2.3")
    assert done == [1]

    def fails() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        deadline.run(fails, 100, "1.2.3")


def test_a_store_that_hangs_is_told_at_its_deadline_and_finishes_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadline = StoreDeadline(threads=1, seconds=0.2)
    frozen, finished = threading.Event(), threading.Event()

    def hangs() -> None:
        frozen.wait(10)
        finished.set()

    with pytest.raises(StoreTimedOut, match=r"did not finish storing it within 0 s"):
        deadline.run(hangs, 100, "1.2.3.4")
    # Its only thread is held: the next store cannot begin, is told so, and never runs.
    ran: list[int] = []
    with pytest.raises(StoreTimedOut, match="no store could begin"):
        deadline.run(lambda: ran.append(1), 100, "1.2.3.5")
    with caplog.at_level(logging.WARNING, logger="dicomnode.receive.store_deadline"):
        frozen.set()
        assert finished.wait(5)
        deadline.run(lambda: ran.append(2), 100, "1.2.3.6")  # the thread is free again
    assert ran == [2]
    assert "a store past its deadline finished: the instance is stored sop=1.2.3.4" in caplog.text


def test_a_large_instance_gets_more_time() -> None:
    deadline = StoreDeadline(threads=1, seconds=60)
    assert deadline.deadline_for(0) == 60
    assert deadline.deadline_for(20 * BYTES_PER_EXTRA_SECOND) == 80
