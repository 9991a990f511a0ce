"""What a node says while its models do not load, and when they do (`ModelLoading`): one line
per distinct failure, a reminder an hour, the time it went without them."""

import logging

import pytest

import dicomnode.pipeline.methods as methods_module
from dicomnode.config import Settings
from dicomnode.errors import ConfigError
from dicomnode.observe.counters import ENHANCEMENT_WAITING
from dicomnode.pipeline.model_loading import REMIND_SECONDS, ModelLoading

LOGGER = "dicomnode.pipeline.model_loading"


class Tries:
    """`load_models` as the tries find it: each raises the next failure, None loads."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)

    def __call__(self, settings: Settings) -> int:
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return 1


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return lines


def test_one_line_per_failure_a_reminder_an_hour_and_the_time_without_models(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out_of_memory = ConfigError("setting enhance.methods: /m/srcnn-x1.keras loads but cannot run")
    monkeypatch.setattr(
        methods_module, "load_models", Tries(out_of_memory, out_of_memory, out_of_memory, None)
    )
    now = [1000.0]
    loading = ModelLoading(Settings(), "the originals are still forwarded", clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, LOGGER)

    assert not loading.load()
    assert _said(caplog) == [
        (
            "ERROR",
            f"enhancement waits: {out_of_memory}; the originals are still forwarded; the "
            "models are tried again every 60 s",
        )
    ]
    assert ENHANCEMENT_WAITING._value.get() == 1
    now[0] += 60
    assert not loading.load()
    assert [level for level, _ in _said(caplog)] == ["DEBUG"]
    now[0] += REMIND_SECONDS
    assert not loading.load()
    assert _said(caplog) == [("WARNING", f"enhancement still waits after 3660 s: {out_of_memory}")]
    now[0] += 30
    assert loading.load() and loading.problem is None
    assert _said(caplog) == [
        ("WARNING", "models loaded after 3690 s without them; enhancement resumes methods=srcnn")
    ]
    assert ENHANCEMENT_WAITING._value.get() == 0


def test_another_failure_is_said_at_once_and_a_bug_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing_kernel = ConfigError("setting enhance.methods: /m/srcnn-x1.keras loads but cannot run")
    monkeypatch.setattr(
        methods_module,
        "load_models",
        Tries(missing_kernel, RuntimeError("no kernel\nfor Conv2D"), None),
    )
    loading = ModelLoading(Settings(), "derived jobs wait queued")
    assert not loading.load()
    caplog.clear()
    assert not loading.load()
    [record] = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert record.getMessage().startswith("enhancement waits: RuntimeError: no kernel; ")
    assert loading.problem == "RuntimeError: no kernel"
    assert loading.load()


def test_models_that_load_at_once_are_said_as_before(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(methods_module, "load_models", Tries(None))
    caplog.set_level(logging.INFO, LOGGER)
    assert ModelLoading(Settings(), "").load()
    assert _said(caplog) == [("INFO", "models loaded methods=srcnn")]
