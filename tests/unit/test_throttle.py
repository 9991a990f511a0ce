"""ThrottledWarnings: a flood of one kind of event is one log line a minute, and the next line
says how many were left out."""

import logging

import pytest

from dicomnode.observe.throttle import ThrottledWarnings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_one_line_and_the_next_says_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    warnings = ThrottledWarnings(logging.getLogger("throttle-test"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="throttle-test"):
        for port in range(1000):
            warnings.warning(("cap", "10.0.0.9"), "connection refused address=10.0.0.9:%d", port)
        clock.now += 59
        warnings.warning(("cap", "10.0.0.9"), "connection refused address=10.0.0.9:%d", 5000)
        clock.now += 1
        warnings.warning(("cap", "10.0.0.9"), "connection refused address=10.0.0.9:%d", 6000)
    assert caplog.messages == [
        "connection refused address=10.0.0.9:0",
        "connection refused address=10.0.0.9:6000 (1000 more like it in the last 60 s not logged)",
    ]


def test_each_address_and_reason_is_told_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    warnings = ThrottledWarnings(logging.getLogger("throttle-test"), clock=Clock())
    with caplog.at_level(logging.WARNING, logger="throttle-test"):
        for key in [("cap", "a"), ("cap", "b"), ("other", "a"), ("cap", "a")]:
            warnings.warning(key, "refused %s %s", *key)
    assert caplog.messages == ["refused cap a", "refused cap b", "refused other a"]


def test_keys_of_a_long_gone_flood_are_forgotten() -> None:
    clock = Clock()
    warnings = ThrottledWarnings(logging.getLogger("throttle-test"), interval=60, clock=clock)
    for n in range(5000):  # a flood from many addresses
        warnings.warning(n, "refused")
    clock.now += 61
    warnings.warning("new", "refused")
    assert len(warnings._last) == 1


def test_another_level_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    echoes = ThrottledWarnings(logging.getLogger("throttle-test"), interval=600, clock=clock)
    with caplog.at_level(logging.INFO, logger="throttle-test"):
        for _ in range(3):
            echoes.log(logging.INFO, "MONITOR", "C-ECHO calling_aet=%s", "MONITOR")
        clock.now += 600
        echoes.log(logging.INFO, "MONITOR", "C-ECHO calling_aet=%s", "MONITOR")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "C-ECHO calling_aet=MONITOR"),
        ("INFO", "C-ECHO calling_aet=MONITOR (2 more like it in the last 600 s not logged)"),
    ]
