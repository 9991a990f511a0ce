"""Backoff and the classification of peers' answers: what decides when and whether to retry."""

import random

import pytest

from dicomnode.config import RetrySettings
from dicomnode.db.backoff import retry_delay_seconds
from dicomnode.forward.outcome import Outcome, classify_store_status, status_text


def test_backoff_doubles_then_caps() -> None:
    policy = RetrySettings(initial_delay_seconds=10, multiplier=2, max_delay_seconds=60, jitter=0)
    assert [retry_delay_seconds(n, policy) for n in range(1, 6)] == [10, 20, 40, 60, 60]


def test_backoff_stays_capped_however_many_attempts() -> None:
    # retry for weeks: 2**1025 is more than a float holds
    policy = RetrySettings(initial_delay_seconds=1, multiplier=2, max_delay_seconds=3600, jitter=0)
    assert retry_delay_seconds(5000, policy) == 3600
    slow = RetrySettings(initial_delay_seconds=30, multiplier=1, max_delay_seconds=3600, jitter=0)
    assert retry_delay_seconds(5000, slow) == 30


def test_default_policy_rides_out_a_pacs_down_for_a_long_weekend() -> None:
    policy = RetrySettings(jitter=0)
    gaps = [retry_delay_seconds(n, policy) for n in range(1, policy.max_attempts)]
    assert sum(gaps[:6]) < 3600 < sum(gaps[:7])  # 7 attempts in the first hour
    assert set(gaps[7:]) == {3600}  # then hourly
    assert 72 * 3600 < sum(gaps) < 74 * 3600  # dead only after about 3 days


def test_jitter_spreads_delays_within_bounds() -> None:
    policy = RetrySettings(
        initial_delay_seconds=100, multiplier=2, max_delay_seconds=1000, jitter=0.25
    )
    rng = random.Random(7)
    delays = [retry_delay_seconds(1, policy, rng) for _ in range(200)]
    assert min(delays) >= 75 and max(delays) <= 125
    assert len({round(d, 3) for d in delays}) > 100  # actually spread, not constant


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.SUCCESS),
        (0xB000, Outcome.WARNING),
        (0xB007, Outcome.WARNING),
        (0x0001, Outcome.WARNING),
        (0x0111, Outcome.WARNING),  # a duplicate: the PACS has it already
        (0xA700, Outcome.TRANSIENT),
        (0xA7FF, Outcome.TRANSIENT),
        (0x0110, Outcome.TRANSIENT),
        (0x0122, Outcome.PERMANENT),
        (0x0124, Outcome.PERMANENT),
        (0xA900, Outcome.PERMANENT),
        (0xC000, Outcome.PERMANENT),
        (0xC211, Outcome.PERMANENT),
    ],
)
def test_store_status_classification(status: int, outcome: Outcome) -> None:
    assert classify_store_status(status) is outcome


def test_a_status_is_told_with_what_it_means() -> None:
    assert status_text(0xA702) == "0xA702 (out of resources)"
    assert status_text(0xC123) == "0xC123 (cannot understand)"
    assert status_text(0x0122) == "0x0122 (SOP class not supported)"
    assert status_text(0xFE00) == "0xFE00"  # no name: the code alone
