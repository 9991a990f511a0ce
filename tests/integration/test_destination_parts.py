"""`destinations[].send`: which of a series' parts (originals, derived) go to each destination.

A clinical PACS that is to hold only what the modalities made takes the originals; a research
archive takes the derived series. Two real Orthancs, one of each.
"""

import json
import time
from pathlib import Path

from tests.conftest import pacs_destination
from tests.support.dcmtk import storescu
from tests.support.node import part_of
from tests.support.orthanc import Orthanc
from tests.support.series import sop_instance_uid, write_ct_series


def test_each_destination_gets_only_the_parts_it_takes(
    node_factory, tmp_path: Path, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    research = Orthanc(tmp_path / "research").start()
    try:
        clinical = {**pacs_destination(orthanc, "clinical"), "send": ["originals"]}
        archive = {**pacs_destination(research, "research"), "send": ["derived"]}
        node = node_factory(
            [clinical, archive],
            enhance={"methods": ["baseline"], "qa_action": "flag", "self_check": False},
        ).start()
        assert storescu(node.port, ct_series).returncode == 0

        jobs = node.wait_for_parts(originals="done", derived="done", timeout=180)
        originals, derived = part_of(jobs, "originals"), part_of(jobs, "derived")
        assert [d["destination"] for d in originals["deliveries"]] == ["clinical"]
        assert [d["destination"] for d in derived["deliveries"]] == ["research"]
        sent = sorted(map(sop_instance_uid, ct_series))
        assert sorted(orthanc.sop_instance_uids()) == sent  # the originals, nothing derived
        made = research.datasets()
        assert len(made) == len(ct_series) + 1  # the derived series and its metrics SR
        assert not set(made) & set(sent)
        assert all("DERIVED" in ds.get("ImageType", ["DERIVED"]) for ds in made.values())

        refused = node.cli("jobs", "resend", str(derived["id"]), "-d", "clinical", check=False)
        assert refused.returncode == 1
        assert "destination 'clinical' does not take derived series (its send: originals)" in (
            refused.stderr
        )
        assert sorted(orthanc.sop_instance_uids()) == sent
    finally:
        research.stop()


def test_a_job_made_before_its_destination_stopped_taking_its_part_sends_it_nothing(
    node_factory, orthanc: Orthanc, tmp_path: Path
) -> None:
    """A job made while the PACS took every part, run after an admin made it originals-only
    (and restarted the node): the derived series must not go there, and nothing is owed
    there either, so the job is done without enhancing, and retention purges it as usual."""
    series = write_ct_series(tmp_path / "series", 3)
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["baseline"], "qa_action": "flag", "self_check": False},
        worker={"workers": 0},  # the derived job waits, queued, for the restart
    ).start()
    assert storescu(node.port, series).returncode == 0
    jobs = node.wait_for_parts(originals="done", derived="queued", timeout=120)
    derived_id = part_of(jobs, "derived")["id"]
    node.stop()
    originals_only = [{**pacs_destination(orthanc), "send": ["originals"]}]
    node.env = {
        "DICOMNODE_DESTINATIONS": json.dumps(originals_only),
        "DICOMNODE_WORKER_WORKERS": "1",
    }
    node.start()

    jobs = node.wait_for_parts(derived="done", timeout=180)
    derived = part_of(jobs, "derived")
    [delivery] = derived["deliveries"]
    assert (delivery["status"], delivery["sent"]) == ("done", 0)
    assert (
        delivery["error"] == "not sent: pacs no longer takes derived series (its send: originals)"
    )
    assert "job goes nowhere now: its destinations no longer take it" in node.log()
    assert f"does not know them job={derived_id}" in node.log()
    assert "enhanced job=" not in node.log()  # not enhanced for nobody
    assert len(orthanc.instance_ids()) == len(series)  # the originals only

    # A resend to the destinations it had sends nothing there either: refused, saying why.
    refused = node.cli("jobs", "resend", str(derived_id), check=False)
    assert refused.returncode == 1
    assert f"no destination job {derived_id} had takes derived series now" in refused.stderr

    # A research archive added since: a resend there enhances the series first (nothing was
    # made to send again).
    research = Orthanc(tmp_path / "research").start()
    try:
        archive = {**pacs_destination(research, "research"), "send": ["derived"]}
        node.stop()
        node.env["DICOMNODE_DESTINATIONS"] = json.dumps([*originals_only, archive])
        node.start()
        node.cli("jobs", "resend", str(derived_id), "-d", "research")
        node.wait_for_jobs(
            lambda js: any(
                j["id"] == derived_id and j["status"] == "done" and j["attempts"] == 1 for j in js
            ),
            timeout=180,
        )
        assert len(research.instance_ids()) == len(series) + 1  # derived series and its SR
        assert f"enhanced job={derived_id}" in node.log()
        assert len(orthanc.instance_ids()) == len(series)
    finally:
        research.stop()


def test_methods_with_no_destination_for_derived_series_say_so_and_make_no_derived_job(
    node_factory, orthanc: Orthanc, ct_series: list[Path], tmp_path: Path
) -> None:
    """Nothing is enhanced, so no model is needed: a model folder without the method's
    files no longer stops the node (exit 2), and none is loaded."""
    (no_models := tmp_path / "no-models").mkdir()
    node = node_factory(
        [{**pacs_destination(orthanc), "send": ["originals"]}],
        enhance={"methods": ["srcnn"], "model_dir": str(no_models), "self_check": False},
    ).start()
    log = node.log()
    assert "WARNING dicomnode.node no destination takes derived series" in log
    assert "models loaded" not in log and "enhancement waits" not in log  # none was tried
    assert storescu(node.port, ct_series).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
    assert job["part"] == "originals"
    assert len(orthanc.instance_ids()) == len(ct_series)
    time.sleep(2)  # a derived job would have been made with the originals' job
    assert len(node.jobs()) == 1
