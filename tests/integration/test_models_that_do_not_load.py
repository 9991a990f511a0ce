"""A model that passes every check of its archive but does not load (weights Keras cannot fit,
a device out of memory at warm-up) no longer stops a node that already listens: it stays a
router, says why once, and tries the models again until they load (`ModelLoading`)."""

import logging
import shutil
import time
from pathlib import Path

import pytest

import dicomnode.node as node_module
from dicomnode.config import (
    EnhanceSettings,
)
from dicomnode.db.jobs import list_jobs
from dicomnode.db.records import JobRecord
from dicomnode.node import Node
from dicomnode.observe.counters import ENHANCEMENT_WAITING
from dicomnode.registry import shipped_models_dir
from dicomnode.status import JobPart, JobStatus
from tests.support.dcmtk import StoreScp, storescu
from tests.support.metrics import Scrape
from tests.support.model_files import foreign
from tests.support.node import started_in_a_thread
from tests.support.series import write_ct_series


def _models_keras_cannot_load(folder: Path) -> Path:
    folder.mkdir()
    foreign(folder / "srcnn-x1.keras")
    return folder / "srcnn-x1.keras"


def _arrived(folder: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < count:
        assert time.monotonic() < deadline, f"{len(list(folder.iterdir()))} of {count} arrived"
        time.sleep(0.2)


def _the_queued_derived_job(node: Node) -> JobRecord:
    [derived] = list_jobs(node.db, JobStatus.QUEUED)
    assert derived.part == JobPart.DERIVED
    return derived


def test_a_model_keras_cannot_load_leaves_the_node_routing_and_its_derived_jobs_queued(
    node_factory, tmp_path: Path
) -> None:
    """It used to stop `serve` (exit 2) after the node had listened: the associations it had
    accepted were dropped, and a service manager restarted it into the same failure."""
    model = _models_keras_cannot_load(tmp_path / "models")
    series = write_ct_series(tmp_path / "series", 3, seed=4)
    with StoreScp(tmp_path / "pacs") as pacs:
        destination = {"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1"}
        node = node_factory(
            [{**destination, "port": pacs.port}],
            enhance={"methods": ["srcnn"], "modalities": ["CT"], "model_dir": str(model.parent)},
            http={"enabled": True},
        ).start()
        said = node.wait_for_log("enhancement waits:")
        assert f"setting enhance.methods: srcnn for CT: {model}: cannot load the model" in said
        assert "the originals are still forwarded, derived jobs wait queued" in said
        assert said.count("\n") == 0 and "Traceback" not in node.log()
        assert Scrape(node.http_port).value("dicomnode_enhancement_waiting") == 1

        assert storescu(node.port, series).returncode == 0
        _arrived(pacs.out_dir, len(series))
        jobs = node.wait_for_jobs(lambda jobs: len(jobs) == 2 and jobs[1]["status"] == "done")
        derived = next(job for job in jobs if job["part"] == "derived")
        assert (derived["status"], derived["attempts"]) == ("queued", 0)
        assert node.log().count("enhancement waits:") == 1
    assert node.stop() == 0


def test_with_only_derived_jobs_forwarding_each_series_goes_as_received_meanwhile(
    node_factory, tmp_path: Path
) -> None:
    """`forward_originals = false` with `forward_unenhanced`: the derived job is what takes a
    series to the PACS, so it runs, and its enhancement fails as it would with any error."""
    model = _models_keras_cannot_load(tmp_path / "models")
    series = write_ct_series(tmp_path / "series", 3, seed=5)
    with StoreScp(tmp_path / "pacs") as pacs:
        destination = {"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1"}
        enhance = {"methods": ["srcnn"], "modalities": ["CT"], "model_dir": str(model.parent)}
        node = node_factory(
            [{**destination, "port": pacs.port}],
            enhance={**enhance, "forward_originals": False, "forward_unenhanced": True},
        ).start()
        assert "each series goes as received meanwhile" in node.wait_for_log("enhancement waits:")
        assert storescu(node.port, series).returncode == 0
        [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
        enhancement = job["details"]["enhancement"]
        assert "cannot load the model" in enhancement, enhancement
        assert enhancement.endswith("; the series went as received")
        _arrived(pacs.out_dir, len(series))


def test_the_enhancement_starts_once_the_model_file_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No restart: the models tick loads the replaced file and the queued derived job runs."""
    monkeypatch.setattr(node_module, "RETRY_SECONDS", 0.5)
    model = _models_keras_cannot_load(tmp_path / "models")
    series = write_ct_series(tmp_path / "series", 2, seed=7, size=64)
    with StoreScp(tmp_path / "pacs") as pacs:
        enhance = EnhanceSettings(
            methods=["srcnn"], modalities=["CT"], model_dir=str(model.parent), self_check=False
        )
        node, starting = started_in_a_thread(tmp_path / "d", pacs.port, enhance)
        try:
            starting.join(60)
            assert ENHANCEMENT_WAITING._value.get() == 1
            assert storescu(node.settings.node.port, series).returncode == 0
            _arrived(pacs.out_dir, len(series))
            # `dicomnode jobs` says why it waits, as the log does: the next round of the
            # models tick (each failing quietly) writes it
            deadline = time.monotonic() + 30
            while not (derived := _the_queued_derived_job(node)).error:
                assert time.monotonic() < deadline, "the queued derived job never said why"
                time.sleep(0.1)
            assert derived.attempts == 0
            assert derived.error.startswith("waits for a worker whose models load ("), derived
            assert f": setting enhance.methods: srcnn for CT: {model}: " in derived.error
            assert derived.error.endswith("; tried again every 0.5 s)"), derived.error

            shutil.copyfile(shipped_models_dir() / "srcnn-x1.keras", model)
            deadline = time.monotonic() + 120
            while list_jobs(node.db, JobStatus.QUEUED) or list_jobs(node.db, JobStatus.PROCESSING):
                assert time.monotonic() < deadline, "the derived job never ran"
                time.sleep(0.2)
            [derived] = [job for job in list_jobs(node.db) if job.part == JobPart.DERIVED]
            assert derived.status in (JobStatus.DONE, JobStatus.HELD), derived
            assert ENHANCEMENT_WAITING._value.get() == 0
        finally:
            node.stop()
    waits = [r.getMessage() for r in caplog.records if "enhancement waits" in r.getMessage()]
    assert len(waits) == 1  # not once per round
    assert any("models loaded after" in r.getMessage() for r in caplog.records)


def test_a_stop_asked_for_while_starting_loads_no_model_and_takes_up_no_derived_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGTERM while the node starts (`serve`: `stop` follows once `start` returns): the
    originals still go, but no model is loaded for a derived job that would only be given back
    (an acceptance run saw one enhanced after "stopping", then queued again)."""
    caplog.set_level(logging.INFO, logger="dicomnode")
    series = write_ct_series(tmp_path / "series", 2, seed=8, size=64)
    with StoreScp(tmp_path / "pacs") as pacs:
        enhance = EnhanceSettings(methods=["srcnn"], modalities=["CT"], self_check=False)
        node, starting = started_in_a_thread(
            tmp_path / "d", pacs.port, enhance, stop_requested=lambda: True
        )
        try:
            starting.join(60)
            assert storescu(node.settings.node.port, series).returncode == 0
            _arrived(pacs.out_dir, len(series))
            deadline = time.monotonic() + 30
            while not list_jobs(node.db, JobStatus.DONE):  # the originals' job
                assert time.monotonic() < deadline, list_jobs(node.db)
                time.sleep(0.1)
            time.sleep(1)  # a worker would have taken the derived job up by now
            assert _the_queued_derived_job(node).attempts == 0
        finally:
            node.stop()
    said = [r.getMessage() for r in caplog.records]
    assert "a stop was asked for while starting: no enhancement worker starts" in said
    assert not any("models loaded" in line for line in said)
    assert any(line.startswith("node started") for line in said)  # INFO lines are seen
