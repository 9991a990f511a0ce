"""qa_action = "hold": a QA failure forwards the originals only, `jobs release` sends the rest."""

from pathlib import Path

from tests.conftest import pacs_destination
from tests.support.dcmtk import storescu
from tests.support.node import part_of
from tests.support.orthanc import Orthanc


def test_held_job_sends_derived_series_only_when_released(
    node_factory, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    node = node_factory(
        [pacs_destination(orthanc)],
        enhance={"methods": ["baseline"], "qa_action": "hold", "self_check": False},
        # Any sharpening at all counts as over-enhancement here, so QA fails every image.
        qa={"sharpness_ratio_warn": 0.0, "sharpness_ratio_fail": 0.0},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    jobs = node.wait_for_parts(derived="held", timeout=180)
    job = part_of(jobs, "derived")
    assert "jobs release" in job["error"]
    assert job["details"]["methods"][0]["qa"] == "fail"
    assert len(orthanc.instance_ids()) == len(ct_series)  # originals only
    listing = node.cli("jobs", "list", "--wide").stdout
    assert "pacs:done (nothing sent)" in listing  # not read as delivered

    node.cli("jobs", "release", str(job["id"]))
    jobs = node.wait_for_jobs(lambda js: part_of(js, "derived")["status"] == "done", timeout=180)
    job = part_of(jobs, "derived")
    assert job["released"] is True
    assert part_of(jobs, "originals")["attempts"] == 1  # a release never resends the originals
    # originals + one derived series + its metrics SR
    assert len(orthanc.instance_ids()) == 2 * len(ct_series) + 1
    refused = node.cli("jobs", "release", str(job["id"]), check=False)
    assert refused.returncode == 1 and "only held jobs" in refused.stderr
