"""Scale-out: one listener and two `dicomnode worker` processes around one PostgreSQL and one spool.

The listener (`serve` with `worker.workers = 0`) receives, makes the jobs and routes the
originals; the workers (`worker.router = false`) take the derived jobs. The enhancement is the
injected `slow` method, so a job stays in "processing" long enough to kill its worker there.
"""

import os
import re
import signal
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dicomnode.db import Database, open_database
from dicomnode.db.jobs import get_job
from dicomnode.db.models import Job
from dicomnode.node import this_host
from tests.conftest import pacs_destination
from tests.support.cli import dicomnode
from tests.support.dcmtk import storescu
from tests.support.metrics import Scrape, http_get
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.series import sop_instance_uid, write_ct_series

INJECTED = "tests.support.injected_methods"
SERIES, INSTANCES = 10, 3
STARTED = re.compile(r"job started job=(\d+) part=derived ")
FINISHED = re.compile(r"job \w+ job=(\d+) series=")


def kill_mid_enhancement(worker: NodeProcess, database_url: str, timeout: float = 120) -> int:
    """SIGKILL `worker` while it enhances a job, after it finished at least one; that job's id.

    The worker is frozen (SIGSTOP) before its job's state is read, so the job cannot move on
    between the check and the kill: "processing" means nothing of it has been sent yet.
    """
    db = open_database(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            log = worker.log()
            running = set(STARTED.findall(log)) - set(FINISHED.findall(log))
            if FINISHED.search(log) and len(running) == 1:
                [job_id] = map(int, running)
                os.kill(worker.pid, signal.SIGSTOP)
                job = get_job(db, job_id)
                if job is not None and job.status == "processing":
                    worker.kill()
                    return job_id
                os.kill(worker.pid, signal.SIGCONT)
            time.sleep(0.02)
    finally:
        db.dispose()
    raise AssertionError(f"the worker never enhanced a second job:\n{worker.log()[-4000:]}")


def freeze_holding_no_lock(worker: NodeProcess, db: Database, job_id: int) -> None:
    """SIGSTOP `worker` at a moment it holds no lock on the job's row: frozen inside its lease
    renewal, it would keep the row locked, and the reaper, which skips locked rows, would never
    take the job from it."""
    for _ in range(100):
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            with db.session() as session:
                session.execute(select(Job.id).where(Job.id == job_id).with_for_update(nowait=True))
            return
        except OperationalError:
            os.kill(worker.pid, signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError(f"job {job_id}'s row was locked at every try")


def process_of(job: dict[str, Any]) -> str:
    """host:pid of the process whose runner took the job's latest attempt."""
    host, pid, *_ = job["claimed_by"].split(":")
    return f"{host}:{pid}"


def wait_for_stores(orthanc: Orthanc, total: int, timeout: float = 30) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while (counts := orthanc.store_counts()).total() < total and time.monotonic() < deadline:
        time.sleep(0.1)
    return counts


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
def test_two_workers_share_the_jobs_and_a_killed_ones_job_is_finished_by_the_other_once(
    node_factory, database_url: str, orthanc: Orthanc, tmp_path: Path
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)],
        worker={"workers": 0, "router": True, "lease_seconds": 5},
        enhance={"methods": ["slow"], "plugins": [INJECTED], "self_check": False},
    ).start()
    env = {
        "DICOMNODE_WORKER_WORKERS": "1",
        "DICOMNODE_WORKER_ROUTER": "false",
        "DICOMNODE_TEST_SLOW_SECONDS": "2",
    }
    first, second = node.worker("worker-a", env), node.worker("worker-b", env)
    try:
        first.start()
        second.start()
        host = this_host()
        first_id, second_id = f"{host}:{first.pid}", f"{host}:{second.pid}"
        sources: set[str] = set()
        for index in range(SERIES):
            files = write_ct_series(tmp_path / f"series{index}", INSTANCES, seed=index)
            assert storescu(node.port, files).returncode == 0
            sources |= {sop_instance_uid(path) for path in files}

        killed = kill_mid_enhancement(first, database_url)
        jobs = node.wait_for_jobs(
            lambda jobs: len(jobs) == 2 * SERIES and all(job["status"] == "done" for job in jobs),
            timeout=180,
        )
        assert second.stop() == 0 and "worker stopped" in second.log()  # SIGTERM: a clean stop
    finally:
        first.stop()
        second.stop()

    # One job per series and part, each done once; only the killed worker's job twice.
    assert Counter((job["series_uid"], job["part"]) for job in jobs).total() == 2 * SERIES
    assert len({job["series_uid"] for job in jobs}) == SERIES
    attempts = {job["id"]: job["attempts"] for job in jobs}
    # Each done in one attempt: the one the kill cut short is not held against its job.
    assert set(attempts.values()) == {1} and killed in attempts
    by_id = {job["id"]: job for job in jobs}
    assert process_of(by_id[killed]) == second_id
    assert f"job lease expired, queued again job={killed}" in node.log() + second.log()

    # The listener routed every originals job; the workers split the derived ones.
    claimed = Counter(job["claimed_by"].rsplit(":", 1)[0] for job in jobs)
    router = next(key for key in claimed if key.endswith(":router"))
    assert claimed[router] == SERIES
    derived_by = Counter(process_of(job) for job in jobs if job["part"] == "derived")
    assert derived_by.keys() == {first_id, second_id}, derived_by

    # Every UID stored exactly once: the originals and everything derived, nothing twice.
    sent = sum(d["sent"] for job in jobs for d in job["deliveries"])
    counts = wait_for_stores(orthanc, sent)
    assert counts.total() == sent, (counts.total(), sent)
    assert set(counts.values()) == {1}
    assert sources <= set(counts) and len(counts) == len(orthanc.instance_ids())
    assert f"forwarded job={killed} " not in first.log()


def test_a_worker_with_nothing_to_do_refuses_to_start_naming_the_settings(node_factory) -> None:
    node = node_factory([])
    idle = {"DICOMNODE_WORKER_WORKERS": "0", "DICOMNODE_WORKER_ROUTER": "false"}
    result = dicomnode("worker", "--config", str(node.config_path), env=idle)
    assert result.returncode == 2
    assert "worker.workers: 0 and worker.router = false leave `dicomnode worker` nothing to do" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_worker_beside_its_listener_takes_no_data_dir_lock_and_is_ready_over_http(
    node_factory,
) -> None:
    node = node_factory([], http={"enabled": True}).start()  # the listener holds data_dir's lock
    port = free_port()
    worker = node.worker("worker", {"DICOMNODE_HTTP_PORT": str(port)})
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while (answer := http_get(port, "/readyz"))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer == (200, "ready\n")  # no listener to ask about: database and disk only
        assert Scrape(port).value("dicomnode_database_up") == 1
        assert http_get(node.http_port, "/readyz") == (200, "ready\n")
    finally:
        code = worker.stop()
    assert code == 0 and "worker stopped" in worker.log()


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
def test_a_worker_paused_past_its_lease_leaves_what_the_attempt_after_it_made_alone(
    node_factory, database_url: str, orthanc: Orthanc, tmp_path: Path
) -> None:
    """Worker A is frozen (SIGSTOP) mid-job, worker B takes the job over and does it, then A
    goes on: A's outputs go, and B's outbox files stay as B recorded and sent them."""
    node = node_factory(
        [pacs_destination(orthanc)],
        worker={"workers": 0, "router": True, "lease_seconds": 5},
        enhance={"methods": ["slow"], "plugins": [INJECTED], "self_check": False},
    ).start()
    env = {"DICOMNODE_WORKER_WORKERS": "1", "DICOMNODE_WORKER_ROUTER": "false"}
    paused = node.worker("worker-a", {**env, "DICOMNODE_TEST_SLOW_SECONDS": "8"})
    taking_over = node.worker("worker-b", {**env, "DICOMNODE_TEST_SLOW_SECONDS": "0"})
    db = open_database(database_url)
    try:
        paused.start()
        files = write_ct_series(tmp_path / "series", INSTANCES)
        assert storescu(node.port, files).returncode == 0
        job_id = int(STARTED.findall(paused.wait_for_log("job started job="))[0])
        # Frozen in its head start, load or 8 s method: before any output of its own.
        freeze_holding_no_lock(paused, db, job_id)
        taking_over.start()
        node.wait_for_jobs(
            lambda jobs: any(job["id"] == job_id and job["status"] == "done" for job in jobs),
            timeout=120,
        )
        outbox = node.data_dir / "spool" / "outbox" / str(job_id)
        made = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in outbox.rglob("*")}

        os.kill(paused.pid, signal.SIGCONT)
        discarded = f"job no longer held, its outputs discarded job={job_id} "
        deadline = time.monotonic() + 60
        while discarded not in paused.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in outbox.rglob("*")}
        assert left == made  # nothing of B's replaced or deleted, nothing of A's left
        assert discarded in paused.log()

        # B's record names B's folder, which holds every series it sent: a resend finds them.
        job = get_job(db, job_id)
        assert job is not None and job.outputs is not None
        [attempt] = {path.relative_to(outbox).parts[0] for path in made}
        assert job.outputs["outbox"] == attempt
        assert sorted(job.outputs["series"]) == sorted(p.name for p in (outbox / attempt).iterdir())
        derived = {path.stem for path in made if path.suffix == ".dcm"}
        assert len(derived) == INSTANCES + 1  # the derived images and the metrics report
        node.cli("jobs", "resend", str(job_id))
        node.wait_for_jobs(
            lambda jobs: (
                any(job["id"] == job_id and job["replay"] is None for job in jobs)
                and all(job["status"] == "done" for job in jobs)
            ),
            timeout=60,
        )
        counts = wait_for_stores(orthanc, 2 * len(derived) + INSTANCES)
        assert {uid: counts[uid] for uid in derived} == dict.fromkeys(derived, 2)
    finally:
        db.dispose()
        with suppress(ProcessLookupError, AssertionError):  # gone, or never started
            os.kill(paused.pid, signal.SIGCONT)  # frozen, it would not hear SIGTERM
        paused.stop()
        taking_over.stop()
