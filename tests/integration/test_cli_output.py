"""Output for scripts: whole values when stdout is not a terminal (or with --wide), --json on
doctor and purge, and `jobs list --status` for every state; a real SQLite database and spool."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from dicomnode.db import ReceivedInstance, open_database
from dicomnode.db.instances import create_jobs_for_quiet_series, record_instance
from dicomnode.db.models import Delivery, Job, utcnow
from dicomnode.spool import Spool
from dicomnode.status import DeliveryStatus, JobPart, JobStatus
from tests.support.cli import dicomnode

CT = "1.2.840.10008.5.1.4.1.1.2"
ERROR_END = "<end of a long error>"


def uid(kind: int, n: int) -> str:
    """A UID of the full 64 characters, the longest a header may carry (PS3.5 9.1)."""
    value = f"1.2.826.0.1.3680043.8.498.{kind}{n:037d}"
    assert len(value) == 64
    return value


class Site:
    """A node's settings file, database and spool, with one job in each state."""

    def __init__(self, root: Path, more_dead: int = 0) -> None:
        self.config = root / "node.toml"
        self.config.write_text(f'[node]\ndata_dir = "{root / "data"}"\n')
        self.db = open_database(f"sqlite:///{root / 'data' / 'dicomnode.sqlite'}")
        self.spool = Spool(root / "data" / "spool")
        self.series: dict[JobStatus, str] = {}
        self.files: dict[JobStatus, Path] = {}
        self.sops: dict[JobStatus, str] = {}
        states = [*JobStatus, *[JobStatus.DEAD] * more_dead]
        for n, status in enumerate(states):
            self._add_job(n, status)
        self.db.dispose()

    def _add_job(self, n: int, status: JobStatus) -> None:
        study, series, sop = uid(7, n), uid(8, n), uid(9, n)
        path = self.spool.write_instance(study, series, sop, b"DICM" * 64)
        record_instance(
            self.db,
            ReceivedInstance(sop, CT, "1.2.840.10008.1.2.1", study, series, "CT", path, 256, "T"),
        )
        [job_id] = create_jobs_for_quiet_series(self.db, 0, ["pacs"], parts=[JobPart.ORIGINALS])
        error = f"pacs (ORTHANC@10.0.0.5:4242): {'refused ' * 20}{ERROR_END}"
        finished = utcnow() - timedelta(days=30)  # past the default retention of 7 days
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=status, error=error, updated_at=finished)
            )
            if status == JobStatus.DONE:
                session.execute(
                    update(Delivery)
                    .where(Delivery.job_id == job_id)
                    .values(status=DeliveryStatus.DONE)
                )
        then = finished.replace(tzinfo=UTC).timestamp()
        os.utime(path, (then, then))  # received before the job finished
        self.series[status], self.files[status], self.sops[status] = series, path, sop

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return dicomnode(*args, "--config", str(self.config), env={"COLUMNS": "80"})


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_piped_jobs_list_shows_every_uid_and_error_whole(site: Site) -> None:
    listing = site.cli("jobs", "list")
    assert listing.returncode == 0, listing.stderr
    assert "…" not in listing.stdout
    for series_uid in site.series.values():
        assert series_uid in listing.stdout
    assert listing.stdout.count(ERROR_END) == len(JobStatus)


def test_piped_jobs_show_keeps_uids_and_errors_on_one_line(site: Site) -> None:
    shown = site.cli("jobs", "show", "1")
    assert shown.returncode == 0, shown.stderr
    [series_line] = [line for line in shown.stdout.splitlines() if "series_uid" in line]
    assert series_line.split() == ["series_uid", site.series[JobStatus.QUEUED]]
    assert any(line.rstrip().endswith(ERROR_END) for line in shown.stdout.splitlines())


def test_piped_doctor_and_purge_name_uids_and_paths_whole(site: Site) -> None:
    site.files[JobStatus.DEAD].unlink()
    doctor = site.cli("doctor")
    assert doctor.returncode == 1
    missing = f"missing: sop={site.sops[JobStatus.DEAD]} {site.files[JobStatus.DEAD]} (ask"
    assert missing in doctor.stdout.splitlines()[-1]

    dry_run = site.cli("purge", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr
    assert f"would purge series={site.series[JobStatus.DONE]}" in dry_run.stdout.splitlines()


def test_doctor_json_reports_the_missing_file(site: Site) -> None:
    site.files[JobStatus.DEAD].unlink()
    result = site.cli("doctor", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["missing_files"] == [
        {"sop": site.sops[JobStatus.DEAD], "path": str(site.files[JobStatus.DEAD])}
    ]
    assert report["problems_left"] == 1 and report["disk_low"] is False


def test_purge_json_lists_then_deletes_the_delivered_series(site: Site) -> None:
    done = site.series[JobStatus.DONE]
    planned = json.loads(site.cli("purge", "--dry-run", "--json").stdout)
    assert planned == {"dry_run": True, "keep_days": 7.0, "series": [{"series_uid": done}]}
    assert site.files[JobStatus.DONE].is_file()

    purged = json.loads(site.cli("purge", "--json").stdout)
    assert purged["dry_run"] is False
    [series] = purged["series"]
    assert series["series_uid"] == done and series["instances"] == 1
    assert series["study_uid"] == uid(7, list(JobStatus).index(JobStatus.DONE))
    assert not site.files[JobStatus.DONE].exists()
    again = json.loads(site.cli("purge", "--json").stdout)
    assert again["series"] == []


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_jobs_list_status_takes_every_state(site: Site, status: JobStatus) -> None:
    result = site.cli("jobs", "list", "--status", status.value, "--json")
    assert result.returncode == 0, result.stderr
    [job] = json.loads(result.stdout)["jobs"]
    assert job["status"] == status.value and job["series_uid"] == site.series[status]


def test_jobs_list_help_names_every_state() -> None:
    shown = dicomnode("jobs", "list", "--help", env={"COLUMNS": "200"}).stdout
    assert all(status.value in shown for status in JobStatus)


@pytest.mark.parametrize(
    "command", [(), ("serve",), ("jobs", "list"), ("doctor",), ("train",)], ids=" ".join
)
def test_help_shows_no_value_after_a_flag(command: tuple[str, ...]) -> None:
    """A flag (`--json`, `--help`) takes no value, so its help shows none: typer 0.29 showed
    `<bool>` after each one, as if `--json true` were the way to use it."""
    shown = dicomnode(*command, "--help", env={"COLUMNS": "200"}).stdout
    assert "--help" in shown and "<bool>" not in shown


def test_help_keeps_each_summary_whole_and_its_placeholders() -> None:
    """A command's summary is one paragraph, not the docstring's line breaks; a `<placeholder>`
    is shown as written, not taken for markup."""
    shown = dicomnode("--help", env={"COLUMNS": "200"}).stdout
    assert (
        "Claim and run jobs (enhance, forward) beside serve, without a listener, on this host or "
        "on another one that reaches the same database and spool." in shown
    )
    shown = dicomnode("train", "--help", env={"COLUMNS": "200"}).stdout
    assert "srcnn[-<modality>]-xS.keras" in shown and "<stem>.loss.png" in shown


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _in_a_terminal(*args: str) -> str:
    """Run the CLI with a pseudo-terminal of 80 columns as its stdout; what it showed."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomnode", *args],
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "80", "LINES": "50"},
    )
    os.close(terminal)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    process.wait(timeout=60)
    reader.join(timeout=10)
    os.close(controller)
    return _ANSI.sub("", b"".join(chunks).decode())


def test_a_terminal_gets_80_columns_unless_wide(site: Site) -> None:
    series = site.series[JobStatus.HELD]
    narrow = _in_a_terminal("jobs", "list", "--config", str(site.config))
    assert "…" in narrow and series not in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 80
    # The states whole (`pacs:d…` was done or dead), each error's start on one line of its own.
    assert narrow.count("pacs:done") == 1 and narrow.count("pacs:pending") == len(JobStatus) - 1
    errors = [line for line in narrow.splitlines() if line.endswith("…")]
    assert len(errors) == len(JobStatus)
    assert all(
        line.startswith(f"{n}: pacs (ORTHANC@10.0.0.5:4242): refused")
        for n, line in zip(range(len(JobStatus), 0, -1), errors, strict=True)
    )
    wide = _in_a_terminal("jobs", "list", "--wide", "--config", str(site.config))
    assert series in wide and ERROR_END in wide and "…" not in wide
    global_flag = _in_a_terminal("--wide", "jobs", "list", "--config", str(site.config))
    assert series in global_flag


def test_after_an_outage_every_dead_job_is_retried_at_once_and_a_limited_list_says_so(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path, more_dead=3)  # four dead jobs among ten
    everything = json.loads(site.cli("jobs", "list", "--json").stdout)
    assert everything["total"] == len(everything["jobs"]) == len(JobStatus) + 3
    limited = json.loads(site.cli("jobs", "list", "--limit", "2", "--json").stdout)
    assert len(limited["jobs"]) == 2 and limited["total"] == len(JobStatus) + 3
    table = site.cli("jobs", "list", "--status", "dead", "--limit", "2").stdout
    assert "the newest 2 of 4 jobs (--limit)" in table
    assert site.cli("jobs", "list", "--limit", "0").returncode == 2

    neither = site.cli("jobs", "retry")
    assert neither.returncode == 2 and "give job IDs or --status" in neither.stderr
    not_retryable = site.cli("jobs", "retry", "--status", "done")
    assert not_retryable.returncode == 2 and "only dead, failed, cancelled jobs" in (
        not_retryable.stderr
    )
    dead = {job["id"] for job in everything["jobs"] if job["status"] == "dead"}
    retried = site.cli("jobs", "retry", "--status", "dead")
    assert retried.returncode == 0, retried.stderr
    assert "4 dead job(s) queued again" in retried.stdout
    assert {int(n) for n in re.findall(r"job (\d+) queued again", retried.stdout)} == dead
    after = json.loads(site.cli("jobs", "list", "--json").stdout)["jobs"]
    assert {job["id"] for job in after if job["status"] == "queued"} >= dead
    assert not [job for job in after if job["status"] == "dead"]

    by_state = {job["status"]: job["id"] for job in after}
    mixed = site.cli("jobs", "retry", str(by_state["failed"]), str(by_state["done"]))
    assert mixed.returncode == 1  # the done job is named, the failed one still went
    assert f"job {by_state['failed']} queued again" in mixed.stdout
    assert f"job {by_state['done']} is done" in mixed.stderr


def test_an_admin_command_while_another_process_holds_the_database_says_try_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite's write lock held past the busy timeout (a node purging, a backup): exit 1 and
    "try again", not exit 2 "cannot open database", which says the settings are wrong."""
    from dicomnode.cli import app
    from dicomnode.db import engine

    monkeypatch.setattr(engine, "BUSY_TIMEOUT_SECONDS", 1)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    open_database(f"sqlite:///{tmp_path / 'data' / 'dicomnode.sqlite'}").dispose()
    holder = sqlite3.connect(tmp_path / "data" / "dicomnode.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(sys, "argv", ["dicomnode", "jobs", "retry", "1", "-c", str(config)])
    try:
        with pytest.raises(SystemExit) as exited:
            app.main()
    finally:
        holder.close()
    assert exited.value.code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "is busy: another process held its write lock for 1 s" in said
    assert said.endswith("try again")


def test_jobs_show_gives_a_next_attempt_only_to_a_job_that_will_have_one(site: Site) -> None:
    """A done job's last retry time would read as an attempt still to come."""
    listing = json.loads(site.cli("jobs", "list", "--json").stdout)
    ids = {job["status"]: job["id"] for job in listing["jobs"]}
    for status, dash in ((JobStatus.DONE, True), (JobStatus.QUEUED, False)):
        shown = site.cli("jobs", "show", str(ids[status])).stdout
        [line] = [line for line in shown.splitlines() if line.split()[:1] == ["next_attempt_at"]]
        assert (line.split()[1] == "-") is dash, line
        job = json.loads(site.cli("jobs", "show", str(ids[status]), "--json").stdout)
        assert (job["next_attempt_at"] is None) is dash, job
