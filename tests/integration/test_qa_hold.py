"""qa_action = "hold": a QA failure forwards the originals only, `jobs release` sends the rest."""

from pathlib import Path

from pynetdicom.sop_class import ComprehensiveSRStorage, CTImageStorage

from tests.conftest import pacs_destination
from tests.support.dcmtk import storescu
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.node import part_of
from tests.support.orthanc import Orthanc

INJECTED = "tests.support.injected_methods"


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
    # What held it, and the limit an admin would tune, where the series is held and logged.
    assert "(the first: sharpness ratio " in job["error"], job["error"]
    assert "> 0.0, qa.sharpness_ratio_fail)" in job["error"], job["error"]
    assert "qa.sharpness_ratio_fail)" in node.log()
    assert job["details"]["methods"][0]["qa"] == "fail"
    assert len(orthanc.instance_ids()) == len(ct_series)  # originals only
    listing = node.cli("jobs", "list", "--wide").stdout
    assert "pacs:nothing sent (held)" in listing  # not read as delivered ("pacs:done")

    node.cli("jobs", "release", str(job["id"]))
    jobs = node.wait_for_jobs(lambda js: part_of(js, "derived")["status"] == "done", timeout=180)
    job = part_of(jobs, "derived")
    assert job["released"] is True
    sent_again = f"job sends again what QA held back (jobs release) job={job['id']} part=derived"
    assert sent_again in node.log()
    shown = node.cli("jobs", "show", str(job["id"])).stdout
    assert "released by an admin; held before: baseline: QA verdict 'fail'" in shown, shown
    assert part_of(jobs, "originals")["attempts"] == 1  # a release never resends the originals
    # originals + one derived series + its metrics SR
    assert len(orthanc.instance_ids()) == 2 * len(ct_series) + 1
    refused = node.cli("jobs", "release", str(job["id"]), check=False)
    assert refused.returncode == 1 and "only held jobs" in refused.stderr


def test_a_pacs_without_sr_storage_gets_the_derived_images_when_reports_are_off(
    node_factory, ct_series: list[Path]
) -> None:
    """Both PACS refuse SR documents (0x0122). The one with `send_metrics_reports = false`
    has the originals and the derived images, the derived job's delivery done; the other's
    is dead for good, its images delivered, the refused report named with the setting."""
    quiet, strict = (
        FaultyScp(behaviour=Behaviour(refuse_sop_class=ComprehensiveSRStorage)).start()
        for _ in range(2)
    )
    try:
        node = node_factory(
            [
                {**quiet.destination("no-sr"), "send_metrics_reports": False},
                strict.destination("strict"),
            ],
            enhance={"methods": ["baseline"], "self_check": False},
        ).start()
        assert storescu(node.port, ct_series[:3]).returncode == 0
        jobs = node.wait_for_parts(derived="dead", timeout=180)
        deliveries = {d["destination"]: d for d in part_of(jobs, "derived")["deliveries"]}
        assert (deliveries["no-sr"]["status"], deliveries["no-sr"]["sent"]) == ("done", 3)
        assert deliveries["strict"]["status"] == "dead" and deliveries["strict"]["sent"] == 3
        assert "refused 1 of 1 instances: 0x0122" in deliveries["strict"]["error"]
        assert deliveries["strict"]["error"].endswith(
            "(the metrics report, an SR document: for a PACS that stores none, "
            "send_metrics_reports = false on the [[destinations]] entry 'strict' sends the "
            "derived images only)"
        )
        assert sum(quiet.stored.values()) == sum(strict.stored.values()) == 2 * 3
        assert ComprehensiveSRStorage in strict.answered_classes
        assert ComprehensiveSRStorage not in quiet.answered_classes
    finally:
        quiet.stop()
        strict.stop()


def test_a_pacs_that_takes_no_sr_context_is_told_of_send_metrics_reports(
    node_factory, ct_series: list[Path]
) -> None:
    """A PACS that accepts no SR presentation context: the refusal names the SR class and the
    setting that sends it the images only (before, only the class)."""
    images_only = FaultyScp(sop_classes=[CTImageStorage]).start()
    try:
        node = node_factory(
            [images_only.destination("pacs")],
            enhance={"methods": ["baseline"], "self_check": False},
        ).start()
        assert storescu(node.port, ct_series[:2]).returncode == 0
        jobs = node.wait_for_parts(derived="dead", timeout=180)
        [delivery] = part_of(jobs, "derived")["deliveries"]
        assert "accepted none of the proposed presentation contexts" in delivery["error"]
        assert "Comprehensive SR Storage" in delivery["error"]
        assert (
            "send_metrics_reports = false on the [[destinations]] entry 'pacs'"
            in (delivery["error"])
        )
    finally:
        images_only.stop()


def test_a_partly_held_job_retried_after_an_outage_sends_what_it_made_and_keeps_the_hold(
    node_factory, ct_series: list[Path]
) -> None:
    """One method's series is held, the other's could not reach the PACS: the retry sends the
    series the first attempt made, without enhancing the series again, and what QA held stays
    held for the same reason until an admin releases it."""
    pacs = FaultyScp(behaviour=Behaviour(status=0xA700)).start()  # out of resources, for now
    try:
        node = node_factory(
            [pacs.destination()],
            enhance={
                "methods": ["baseline", "harmful"],
                "plugins": [INJECTED],
                "qa_action": "hold",
            },
            retry={"max_attempts": 30, "initial_delay_seconds": 2, "max_delay_seconds": 2},
        ).start()
        assert storescu(node.port, ct_series).returncode == 0
        jobs = node.wait_for_jobs(
            lambda jobs: part_of(jobs, "derived").get("status") == "failed", timeout=180
        )
        job_id = part_of(jobs, "derived")["id"]
        pacs.behave(Behaviour(status=0x0000))  # it is back

        jobs = node.wait_for_parts(originals="done", derived="held", timeout=180)
        derived = part_of(jobs, "derived")
        assert derived["error"].startswith("harmful: ") and "jobs release" in derived["error"]
        # tried twice at least (its waits for the originals are not counted among its attempts)
        assert derived["deliveries"][0]["attempts"] >= 2
        log = node.log()
        assert log.count(f"enhanced job={job_id} method=baseline") == 1, log[-3000:]
        assert f"job sends what an earlier attempt made job={job_id}" in log
        # The originals, and baseline's derived series with its metrics SR.
        assert len(pacs.stored) == 2 * len(ct_series) + 1

        node.cli("jobs", "release", str(job_id))
        node.wait_for_parts(derived="done", timeout=120)
        assert len(pacs.stored) == 3 * len(ct_series) + 2
        assert set(pacs.stored.values()) == {1}  # nothing twice
    finally:
        pacs.stop()
