"""Methods that misbehave on purpose, loaded into a node with `enhance.plugins`.

`failing` raises on every series (a bug, an out-of-memory); `harmful` adds noise (its self-check
is negative); `slow` takes
`DICOMNODE_TEST_SLOW_SECONDS` (default 20) per series and then changes nothing, or, with
`DICOMNODE_TEST_SLOW_UNTIL` (a path), waits until that file exists (at most 5 minutes): a test
then decides when it ends, whatever the load. Tests use them to show that the originals never
wait for, and never fail with, the enhancement.
"""

import os
import time
from pathlib import Path

import numpy as np

from dicomnode.config import Settings
from dicomnode.imaging.enhance import Method, revised
from dicomnode.registry import MethodSpec, register


class _Injected:
    scale = 1
    device = "CPU"
    model_sha256 = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = revised(f"{name}-1")


class FailingMethod(_Injected):
    def __call__(self, stack: np.ndarray) -> np.ndarray:
        raise RuntimeError("injected failure: this method always raises")


class HarmfulMethod(_Injected):
    """Adds noise: the self-check must find it worse than the reference on every image."""

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(0).normal(0.0, 0.05, stack.shape)
        return (stack + noise).astype(np.float32)


class SlowMethod(_Injected):
    def __call__(self, stack: np.ndarray) -> np.ndarray:
        until = os.environ.get("DICOMNODE_TEST_SLOW_UNTIL")
        if until:
            deadline = time.monotonic() + 300
            while not Path(until).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        else:
            time.sleep(float(os.environ.get("DICOMNODE_TEST_SLOW_SECONDS", "20")))
        return stack.copy()


def build_unrevised(settings: Settings, modality: str = "") -> Method:
    """A plugin that names its version without the node's pixel revision (not registered)."""
    method = SlowMethod("unrevised")
    method.version = "unrevised-1"
    return method


def build_failing(settings: Settings, modality: str = "") -> Method:
    return FailingMethod("failing")


def build_harmful(settings: Settings, modality: str = "") -> Method:
    return HarmfulMethod("harmful")


def build_slow(settings: Settings, modality: str = "") -> Method:
    return SlowMethod("slow")


for _name in ("failing", "harmful", "slow"):
    register(
        MethodSpec(
            name=_name,
            builder=f"{__name__}:build_{_name}",
            series_offset_key="baseline_series_offset",
        )
    )
