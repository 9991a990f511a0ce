"""When a failed job is tried again: exponential backoff with jitter, capped."""

import random

from dicomnode.config import RetrySettings


def retry_delay_seconds(
    attempt: int, policy: RetrySettings, rng: random.Random | None = None
) -> float:
    """Delay before attempt `attempt + 1`, after `attempt` (>= 1) failed ones.

    initial * multiplier**(attempt-1), capped at max_delay, then spread by ±jitter so that jobs
    failing together (a PACS restart) do not all come back in the same second.
    """
    base = float(policy.initial_delay_seconds)
    for _ in range(max(0, attempt - 1)):  # grown step by step: multiplier**1025 overflows
        if base >= policy.max_delay_seconds or policy.multiplier <= 1:
            break
        base *= policy.multiplier
    base = min(base, policy.max_delay_seconds)
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    return max(0.0, base * (1.0 + spread))
