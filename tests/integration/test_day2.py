"""Day-2 commands against a running node: resend, release, discard, retry with its history, and
the node's log line for each admin action."""

import getpass
import json
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import ON_BOTH_DATABASES, pacs_destination
from tests.support.dcmtk import storescu
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.node import NodeProcess, part_of
from tests.support.orthanc import Orthanc
from tests.support.series import write_ct_series


def _show(node: NodeProcess, job_id: int) -> dict:  # type: ignore[type-arg]
    return json.loads(node.cli("jobs", "show", str(job_id), "--json").stdout)


def test_resend_puts_a_done_series_into_orthanc_again_and_only_there(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    archive = FaultyScp().start()
    try:
        node: NodeProcess = node_factory(
            [pacs_destination(orthanc), archive.destination("archive")]
        ).start()
        files = write_ct_series(tmp_path / "series", 4)
        assert storescu(node.port, files).returncode == 0
        [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
        orthanc.delete_instances()
        assert orthanc.instance_ids() == []

        said = node.cli("jobs", "resend", str(job["id"]), "--destination", "pacs")
        assert f"job {job['id']} queued to send its instances again to pacs" in said.stdout
        node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "done" and jobs[0]["attempts"] == 1)
        assert len(orthanc.instance_ids()) == len(files)  # in the real PACS again
        assert set(archive.stored.values()) == {1}  # the other destination got nothing twice

        history = _show(node, job["id"])["history"]
        assert [(e["kind"], e["status"]) for e in history] == [
            ("attempt", "done"),
            ("resend", "queued"),
            ("attempt", "done"),
        ]
        assert history[1]["user"] == getpass.getuser()
        line = node.wait_for_log("admin action=resend")
        assert f"job={job['id']} user={getpass.getuser()}" in line and "to pacs" in line

        unknown = node.cli("jobs", "resend", str(job["id"]), "-d", "nowhere", check=False)
        assert unknown.returncode == 1
        assert "destination 'nowhere' is not configured (configured: pacs, archive)" in (
            unknown.stderr
        )
        not_given_up = node.cli("jobs", "discard", str(job["id"]), "--yes", check=False)
        assert not_given_up.returncode == 1
        assert "only dead, cancelled jobs can be discarded" in not_given_up.stderr
    finally:
        archive.stop()


def test_release_sends_only_the_held_series_and_resend_sends_them_again(
    node_factory, ct_series: list[Path]
) -> None:
    pacs = FaultyScp().start()
    try:
        node: NodeProcess = node_factory(
            [pacs.destination("pacs")],
            enhance={"methods": ["baseline"], "qa_action": "hold", "self_check": False},
            # Any sharpening at all counts as over-enhancement here, so QA fails every image.
            qa={"sharpness_ratio_warn": 0.0, "sharpness_ratio_fail": 0.0},
        ).start()
        assert storescu(node.port, ct_series).returncode == 0
        derived = part_of(node.wait_for_parts(derived="held", timeout=180), "derived")
        originals = set(pacs.stored)
        assert len(originals) == len(ct_series)

        said = node.cli("jobs", "release", str(derived["id"]))
        assert "sent as they were made" in said.stdout
        jobs = node.wait_for_jobs(lambda js: part_of(js, "derived")["status"] == "done")
        released = part_of(jobs, "derived")
        # derived images + their metrics SR, each once; no original a second time
        held = set(pacs.stored) - originals
        assert len(held) == len(ct_series) + 1
        assert set(pacs.stored.values()) == {1}
        # Sent from the outbox as made: the enhancement did not run again.
        assert released["details"] == derived["details"]
        assert released["replay"] is None
        kinds = [(e["kind"], e["status"]) for e in _show(node, derived["id"])["history"]]
        assert kinds == [("attempt", "held"), ("release", "queued"), ("attempt", "done")]
        node.wait_for_log("admin action=release")

        node.cli("jobs", "resend", str(derived["id"]))
        node.wait_for_jobs(
            lambda js: (
                part_of(js, "derived")["status"] == "done"
                and len(part_of(js, "derived")["history"]) == 5
            )
        )
        assert {uid: pacs.stored[uid] for uid in held} == dict.fromkeys(held, 2)
        assert {pacs.stored[uid] for uid in originals} == {1}
    finally:
        pacs.stop()


def _rows(node: NodeProcess, database_url: str, table: str) -> int:
    """Rows in `table` of the node's database (its SQLite file, or the test's PostgreSQL)."""
    engine = create_engine(database_url or f"sqlite:///{node.data_dir / 'dicomnode.sqlite'}")
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@ON_BOTH_DATABASES  # discard's row locks and the admin log's SKIP LOCKED on PostgreSQL too
def test_history_survives_a_retry_and_discard_removes_a_dead_series(
    node_factory, tmp_path: Path, database_url: str
) -> None:
    pacs = FaultyScp().start()
    try:
        pacs.behave(Behaviour(status=0xC000))  # refused for good: dead at the first attempt
        node: NodeProcess = node_factory([pacs.destination("pacs")]).start()
        for number in (1, 2):
            files = write_ct_series(tmp_path / f"series{number}", 3, seed=number)
            assert storescu(node.port, files).returncode == 0
            node.wait_for_jobs(lambda js, n=number: len(js) == n and js[0]["status"] == "dead")
        kept, given_up = 1, 2

        # Retry: the earlier attempt and its error stay in the history.
        pacs.behave(Behaviour())
        node.cli("jobs", "retry", str(kept))
        node.wait_for_jobs(lambda js: {j["id"]: j["status"] for j in js}[kept] == "done")
        job = _show(node, kept)
        assert job["error"] is None
        first, retry, second = job["history"]
        assert (first["kind"], first["attempt"], first["status"]) == ("attempt", 1, "dead")
        assert "0xC000" in first["detail"]
        assert (retry["kind"], retry["detail"]) == ("retry", "queued again (was dead)")
        assert (second["kind"], second["attempt"], second["status"]) == ("attempt", 1, "done")
        shown = node.cli("jobs", "show", str(kept)).stdout
        assert "history" in shown and "0xC000" in shown

        # Discard: a dry run and a "no" delete nothing; --yes deletes files and rows.
        spooled = sorted((node.data_dir / "spool" / "instances").glob("*/*/*.dcm"))
        assert len(spooled) == 6
        dry = node.cli("jobs", "discard", str(given_up), "--dry-run")
        assert "would discard series=" in dry.stdout and "job(s) 2 and 3 instance(s)" in dry.stdout
        for answer in ("", "n\n"):  # no answer (end of input), and "no"
            refused = node.cli("jobs", "discard", str(given_up), check=False, answer=answer)
            assert refused.returncode == 1 and "not confirmed: nothing deleted" in refused.stderr
        assert len(list((node.data_dir / "spool" / "instances").glob("*/*/*.dcm"))) == 6

        done = node.cli("jobs", "discard", str(given_up), "--yes")
        assert "discarded series=" in done.stdout and "3 instance(s)" in done.stdout
        left = sorted((node.data_dir / "spool" / "instances").glob("*/*/*.dcm"))
        assert len(left) == 3 and set(left) < set(spooled)
        assert [j["id"] for j in node.jobs()] == [kept]
        gone = node.cli("jobs", "show", str(given_up), check=False)
        assert gone.returncode == 1 and "job 2 does not exist" in gone.stderr
        assert _rows(node, database_url, "instances") == 3
        assert _rows(node, database_url, "deliveries") == 1
        line = node.wait_for_log("admin action=discard")
        assert "job=2" in line and "3 instance(s)" in line
        node.wait_for_log("admin action=retry job=1")
    finally:
        pacs.stop()
