"""The pure parts of the metrics endpoint: refusal reasons and the bounded readiness checks."""

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dicomnode.config import EnhanceSettings, HttpSettings, load_settings
from dicomnode.db.failures import database_said, underlying
from dicomnode.db.group_commit import RowNotRecorded
from dicomnode.errors import ConfigError, DecodeError, DiskFull, InstanceTooLarge, SpoolError
from dicomnode.observe import collector
from dicomnode.observe.bounded import BoundedCall
from dicomnode.observe.collector import ConfiguredModels
from dicomnode.observe.counters import REFUSAL_REASONS
from dicomnode.observe.endpoint import ConnectionSlots, Readiness
from dicomnode.receive.status import refusal_reason, refusal_text, sender_text
from dicomnode.spool import Spool


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DecodeError("no SOPInstanceUID"), "cannot_decode"),
        (InstanceTooLarge("3000 MB"), "too_large"),
        (DiskFull("below node.min_free_disk_mb"), "disk_full"),
        (SpoolError("permission denied"), "spool"),
        (OperationalError("INSERT ...", {}, sqlite3.OperationalError("disk full")), "database"),
        (RuntimeError("a bug"), "internal"),
    ],
)
def test_each_receive_failure_has_an_exported_refusal_reason(error: Exception, reason: str) -> None:
    assert refusal_reason(error) == reason
    assert reason in REFUSAL_REASONS


def test_a_database_failure_is_told_by_the_drivers_words_without_the_statement() -> None:
    """SQLAlchemy's text of a failed INSERT holds the statement, its parameters (UIDs) and a web
    link over three lines: the C-STORE log line gets the driver's one clause, the sender's
    ErrorComment not even that (PostgreSQL's may name the server's address)."""
    error = OperationalError(
        "INSERT INTO instances (sop_instance_uid) VALUES (?)",
        ("1.2.3",),
        sqlite3.OperationalError("database or disk is full"),
    )
    assert "[SQL: INSERT" in str(error)
    assert refusal_text(error) == "the database could not record it: database or disk is full"
    assert sender_text(error) == "the database could not record it; send it again later"
    assert refusal_reason(error) == "database"
    assert refusal_text(SpoolError("permission denied")) == "permission denied"
    assert sender_text(SpoolError("permission denied")) == "permission denied"


def test_a_grouped_commit_is_judged_by_what_failed_in_it() -> None:
    """A row's grouped commit (`RowNotRecorded`) carries the error of its transaction: a full
    disk stays a full disk and a bug a bug, not "the database"."""

    def carried(cause: Exception) -> RowNotRecorded:
        try:
            raise RowNotRecorded(f"instance row not recorded: {cause}") from cause
        except RowNotRecorded as error:
            return error

    full = carried(DiskFull("node.min_free_disk_mb=500 MB: storing it would leave less free"))
    assert refusal_reason(underlying(full)) == "disk_full"
    bug = carried(TypeError("unsupported operand"))
    assert database_said(bug) is None and refusal_reason(underlying(bug)) == "internal"
    locked = carried(sqlite3.OperationalError("database is locked"))
    assert (
        refusal_text(underlying(locked)) == "the database could not record it: database is locked"
    )
    assert refusal_reason(RowNotRecorded("its transaction never ended")) == "database"
    pool = PoolTimeout(
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00 "
        "(Background on this error at: https://sqlalche.me/e/20/3o7r)"
    )
    assert database_said(carried(pool)) == (
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"
    )
    assert refusal_reason(underlying(carried(pool))) == "database"


def test_readiness_lists_each_failing_check_and_is_empty_when_all_pass() -> None:
    def broken() -> str | None:
        raise OSError("no such file")

    readiness = Readiness([lambda: None, lambda: "disk: full", broken], timeout_seconds=5)
    assert readiness.problems() == ["disk: full", "OSError: no such file"]
    assert Readiness([lambda: None], timeout_seconds=5).problems() == []


def test_readiness_answers_in_time_when_a_check_hangs_and_shares_the_hung_round() -> None:
    release = threading.Event()
    rounds: list[int] = []

    def hanging() -> str | None:
        rounds.append(1)
        release.wait(30)
        return None

    readiness = Readiness([hanging], timeout_seconds=0.2)
    try:
        for _ in range(3):
            assert readiness.problems() == [
                "checks did not finish within http.check_timeout_seconds=0.2: "
                "hanging still answering"
            ]
        assert len(rounds) == 1  # probes wait for the round in progress, not start new ones
    finally:
        release.set()
    assert readiness.problems() == []  # the round in progress ends, and passes


def test_the_http_endpoint_is_off_by_default_and_its_settings_are_checked() -> None:
    assert load_settings(None, environ={}).http.enabled is False
    environ = {"DICOMNODE_HTTP_ENABLED": "true", "DICOMNODE_HTTP_PORT": "9200"}
    on = load_settings(None, environ=environ)
    assert on.http.enabled and on.http.port == 9200
    with pytest.raises(ConfigError, match=r"http\.port .*DICOMNODE_HTTP_PORT.*: 0 is not a TCP"):
        load_settings(None, environ={"DICOMNODE_HTTP_PORT": "0"})
    with pytest.raises(ConfigError, match=r"http\.check_timeout_seconds .*: must be > 0"):
        load_settings(None, environ={"DICOMNODE_HTTP_CHECK_TIMEOUT_SECONDS": "0"})


def test_the_http_connection_limits_are_checked() -> None:
    over = r"setting http\.max_connections_per_address: must be 1\.\.http\.max_connections \(8\)"
    with pytest.raises(ConfigError, match=over):
        HttpSettings(max_connections=8, max_connections_per_address=9).validate()
    with pytest.raises(ConfigError, match=r"setting http\.max_connections: must be 1\.\.1024"):
        HttpSettings(max_connections=0).validate()


def test_connection_slots_cap_each_address_and_all_and_come_back() -> None:
    slots = ConnectionSlots(total=5, per_address=2)
    assert [slots.take("10.0.0.1") for _ in range(3)] == [None, None, "per_address_cap"]
    assert [slots.take("10.0.0.2") for _ in range(3)] == [None, None, "per_address_cap"]
    assert slots.take("10.0.0.3") is None and slots.take("10.0.0.4") == "total_cap"  # 5 in all
    slots.give_back("10.0.0.1")
    assert slots.take("10.0.0.4") is None and slots.take("10.0.0.5") == "total_cap"
    slots.give_back("10.0.0.3")
    assert slots.take("10.0.0.2") == "per_address_cap"  # its 2, though a slot is free
    assert slots.take("10.0.0.1") is None and slots.take("10.0.0.3") == "total_cap"


def test_a_bounded_call_hands_back_the_functions_error() -> None:
    def failing() -> int:
        raise ValueError("bad table")

    with pytest.raises(ValueError, match="bad table"):
        BoundedCall(failing, 5, "read")()
    assert BoundedCall(lambda: 42, 5, "read")() == 42


def test_a_scrape_whose_database_read_hangs_answers_in_time_without_the_job_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that does not answer (a hung PostgreSQL, an NFS mount gone) costs a scrape
    at most its timeout: `dicomnode_database_up 0`, no job families, the disk still told."""
    answered = threading.Event()
    monkeypatch.setattr(collector, "queue_snapshot", lambda db: answered.wait(30))
    registry = CollectorRegistry()
    registry.register(collector.NodeCollector(None, Spool(tmp_path / "spool"), 0.5))  # type: ignore[arg-type]
    started = time.monotonic()
    text = generate_latest(registry).decode()
    answered.set()
    assert time.monotonic() - started < 5
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["dicomnode_database_up"].samples[0].value == 0
    assert "dicomnode_jobs" not in families and "dicomnode_disk_free_bytes" in families


def test_configured_models_name_each_modalitys_model_file_before_any_job(tmp_path: Path) -> None:
    (tmp_path / "srcnn-ct-x1.keras").write_bytes(b"a model")
    enhance = EnhanceSettings(
        methods=["srcnn", "baseline"], modalities=["CT", "MR"], model_dir=str(tmp_path)
    )
    registry = CollectorRegistry()
    registry.register(ConfiguredModels(enhance))
    [family] = text_string_to_metric_families(generate_latest(registry).decode())
    assert family.name == "dicomnode_configured_model_info"  # an info is a gauge of 1 in text
    assert sorted((s.labels for s in family.samples), key=lambda labels: labels["modality"]) == [
        {"method": "srcnn", "modality": "CT", "file": "srcnn-ct-x1.keras", "present": "true"},
        {"method": "srcnn", "modality": "MR", "file": "srcnn-x1.keras", "present": "false"},
    ]
