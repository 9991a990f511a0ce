"""Destinations that fail: refusing, answering failure statuses, hanging mid-transfer.

The misbehaving peer is `FaultyScp` (a pynetdicom SCP in the test process); the healthy one is a
real Orthanc. Each test asserts on what the peers hold and what the job table says.
"""

import itertools
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dicomnode.db import open_database
from tests.conftest import ON_BOTH_DATABASES, pacs_destination
from tests.support.dcmtk import storescu
from tests.support.faulty_scp import Behaviour, FaultyScp
from tests.support.metrics import Scrape
from tests.support.node import part_of
from tests.support.orthanc import Orthanc
from tests.support.series import sop_instance_uid, write_ct_series

ATTEMPT_LINE = re.compile(r"^(\S+) INFO \S+ job started job=1 .* attempt=(\d+)$", re.M)

pytestmark = ON_BOTH_DATABASES


@pytest.fixture
def faulty() -> Iterator[FaultyScp]:
    scp = FaultyScp().start()
    yield scp
    scp.stop()


def attempt_times(log: str) -> list[float]:
    """When each attempt of job 1 started, in seconds, from the node's log lines."""
    return [
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        for stamp, _ in ATTEMPT_LINE.findall(log)
    ]


def test_failure_status_is_dead_at_once_with_the_code_and_retry_brings_it_back(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    faulty.behave(Behaviour(status=0xC000))  # "cannot understand": resending won't help
    node = node_factory([faulty.destination()]).start()
    assert storescu(node.port, ct_series).returncode == 0

    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "dead")
    assert job["attempts"] == 1
    assert job["deliveries"][0]["status"] == "dead"
    assert f"faulty: refused {len(ct_series)} of {len(ct_series)} instances: 0xC000" in job["error"]
    assert not faulty.stored

    faulty.behave(Behaviour(status=0x0000))  # the PACS admin fixed it
    node.cli("jobs", "retry", str(job["id"]))
    [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "done")
    assert job["deliveries"][0]["sent"] == len(ct_series)
    assert sorted(faulty.stored.values()) == [1] * len(ct_series)


def test_out_of_resources_retries_with_growing_backoff_then_goes_dead(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    faulty.behave(Behaviour(status=0xA700))
    node = node_factory(
        [faulty.destination()],
        retry={
            "max_attempts": 4,
            "initial_delay_seconds": 1,
            "multiplier": 3,
            "max_delay_seconds": 10,
            "jitter": 0.1,
        },
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "dead", timeout=90)
    assert job["attempts"] == 4
    assert "faulty: answered 0xA700" in job["error"] and "gave up after 4 attempts" in job["error"]
    # Two instances per attempt: a second "try later" in a row stops the series there.
    assert faulty.answered == [0xA700] * 8
    assert (
        f"(2 of {len(ct_series)} instances not taken for now, 0 sent, stopped there: "
        in (job["error"])
    )
    starts = attempt_times(node.log())
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 3, node.log()[-3000:]
    # Nominal 1 s, 3 s, 9 s (+-10 % jitter, plus the attempt's own time): each wait longer.
    assert 0.8 < gaps[0] < gaps[1] < gaps[2], gaps


def test_an_instance_answered_try_later_does_not_keep_the_rest_of_its_series_from_the_pacs(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    """A PACS that answers one instance "processing failure" (0x0110: Orthanc's answer when a
    plugin or its storage rejects it) on every try: the series' other instances arrive, and the
    job retries that one until it is dead, naming it. Before, the series stopped at that
    instance on every attempt, and what came after it never reached the PACS."""
    stuck = sop_instance_uid(ct_series[1])
    faulty.behave(Behaviour(status_for={stuck: 0x0110}))
    node = node_factory(
        [faulty.destination()],
        retry={"max_attempts": 2, "initial_delay_seconds": 1, "max_delay_seconds": 1},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "dead", timeout=60)
    others = {sop_instance_uid(path) for path in ct_series} - {stuck}
    # Once each: a retry sends only what the PACS has not stored (db/delivered.py).
    assert {uid: faulty.stored[uid] for uid in others} == dict.fromkeys(others, 1)
    assert set(faulty.stored) == others
    assert faulty.answered.count(0x0110) == 2
    assert (
        "delivery goes on where the last attempt stopped job=1 destination=faulty "
        f"stored_before={len(others)} to_send=1"
    ) in node.log()
    total = len(ct_series)
    assert (
        f"faulty: answered 0x0110 (processing failure) for sop={stuck} "
        f"(1 of {total} instances not taken for now, " in (job["error"])
    )
    assert f"{total - 1} sent)" in job["error"]
    assert job["deliveries"][0]["sent"] == total - 1


def test_rejected_association_is_retried_with_the_peers_reason(
    node_factory, ct_series: list[Path]
) -> None:
    picky = FaultyScp(allowed_calling_aets=["SOMEONE"]).start()
    try:
        node = node_factory([picky.destination()], retry={"max_attempts": 2}).start()
        assert storescu(node.port, ct_series).returncode == 0
        [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "dead")
        assert job["attempts"] == 2
        assert "association rejected by faulty (FAULTY@127.0.0.1" in job["error"]
        assert "Calling AE title not recognised" in job["error"]
        assert "gave up after 2 attempts" in job["error"]
        assert not picky.stored
    finally:
        picky.stop()


def test_a_peer_hanging_mid_transfer_times_out_and_never_delays_the_other_destination(
    node_factory, faulty: FaultyScp, orthanc: Orthanc, ct_series: list[Path]
) -> None:
    faulty.behave(Behaviour(hang_at=3))  # takes two instances, then never answers the third
    dimse_timeout = 10  # long enough to see the healthy PACS finish first on a slow machine
    node = node_factory(
        [faulty.destination(), pacs_destination(orthanc)],
        network={"dimse_timeout": dimse_timeout, "network_timeout": dimse_timeout},
        # "failed" lasts until the retry: long enough for `jobs list` to see it on a slow machine
        retry={"initial_delay_seconds": 5, "max_delay_seconds": 5},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0

    # The healthy PACS has the whole series while the faulty one still hangs.
    [job] = node.wait_for_jobs(
        lambda jobs: (
            jobs
            and {d["destination"]: d["status"] for d in jobs[0]["deliveries"]}
            == {"pacs": "done", "faulty": "pending"}
        )
    )
    assert job["status"] == "forwarding"
    assert len(orthanc.instance_ids()) == len(ct_series)

    [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "failed", timeout=30)
    by_name = {d["destination"]: d for d in job["deliveries"]}
    assert by_name["faulty"]["status"] == "failed"
    assert "no C-STORE response for sop=" in by_name["faulty"]["error"]
    assert "within 10 s (network.dimse_timeout)" in by_name["faulty"]["error"]
    assert by_name["faulty"]["sent"] == 2  # what went before the hang is counted
    assert len(faulty.stored) == 2

    faulty.behave(Behaviour())  # the peer recovers
    [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "done", timeout=30)
    by_name = {d["destination"]: d for d in job["deliveries"]}
    assert by_name["faulty"]["sent"] == len(ct_series)
    assert set(faulty.stored) == {sop_instance_uid(path) for path in ct_series}
    # The healthy destination was not sent the series again on the retry.
    assert by_name["pacs"]["attempts"] == 1
    assert node.log().count("forwarded job=1 destination=pacs ") == 1


def test_a_refusing_destination_does_not_stop_retries_to_one_that_was_down(
    node_factory, faulty: FaultyScp, tmp_path: Path, ct_series: list[Path]
) -> None:
    faulty.behave(Behaviour(status=0xA900))  # "data set does not match SOP class": permanent
    late = Orthanc(tmp_path / "late-pacs")  # configured, not yet started
    node = node_factory([faulty.destination(), pacs_destination(late)]).start()
    assert storescu(node.port, ct_series).returncode == 0

    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "failed")
    assert {d["destination"]: d["status"] for d in job["deliveries"]} == {
        "faulty": "dead",
        "pacs": "failed",
    }
    late.start()
    try:
        [job] = node.wait_for_jobs(lambda jobs: jobs[0]["status"] == "dead")
        assert {d["destination"]: d["status"] for d in job["deliveries"]} == {
            "faulty": "dead",
            "pacs": "done",
        }
        assert len(late.instance_ids()) == len(ct_series)
        assert job["error"].startswith("faulty: refused")  # named once
    finally:
        late.stop()


def test_a_hanging_destination_does_not_hold_back_the_next_job_at_the_other_one(
    node_factory, faulty: FaultyScp, orthanc: Orthanc, tmp_path: Path
) -> None:
    faulty.behave(Behaviour(hang_at=1))  # never answers anything
    node = node_factory(
        [faulty.destination(), pacs_destination(orthanc)],
        network={"dimse_timeout": 20, "network_timeout": 20},
        retry={"initial_delay_seconds": 60, "max_delay_seconds": 60},
    ).start()
    first = write_ct_series(tmp_path / "first", 3)
    second = write_ct_series(tmp_path / "second", 3, seed=1)
    assert storescu(node.port, first).returncode == 0
    node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "forwarding")
    assert storescu(node.port, second).returncode == 0

    # Both series reach the healthy PACS while the first job still waits on the hung one.
    jobs = node.wait_for_jobs(
        lambda jobs: (
            len(jobs) == 2
            and all(
                {d["destination"]: d["status"] for d in job["deliveries"]}
                == {"pacs": "done", "faulty": "pending"}
                for job in jobs
            )
        ),
        timeout=15,
    )
    assert [job["status"] for job in jobs] == ["forwarding", "forwarding"]
    assert len(orthanc.instance_ids()) == len(first) + len(second)
    faulty.release()


def test_stopping_the_node_gives_back_deliveries_that_had_not_started(
    node_factory, faulty: FaultyScp, tmp_path: Path
) -> None:
    faulty.behave(Behaviour(hang_at=1))
    # Long enough that job 1's delivery still hangs when the node is stopped, even on a slow
    # machine; short enough for the stop (which waits for it) to end well inside 30 s.
    node = node_factory(
        [faulty.destination()],
        network={"dimse_timeout": 15, "network_timeout": 15},
        retry={"initial_delay_seconds": 1, "max_delay_seconds": 1},
    ).start()
    for count in (1, 2):
        series = write_ct_series(tmp_path / f"series{count}", 2, seed=count)
        assert storescu(node.port, series).returncode == 0
        node.wait_for_jobs(
            lambda jobs, n=count: len(jobs) == n and jobs[0]["status"] == "forwarding"
        )

    assert node.stop() == 0  # SIGTERM: the hung delivery times out, the queued one is given back
    by_id = {job["id"]: job for job in node.jobs()}
    assert by_id[1]["status"] == "failed" and "no C-STORE response" in by_id[1]["error"]
    assert (by_id[2]["status"], by_id[2]["attempts"]) == ("queued", 0)
    assert "job queued again for the next start job=2" in node.log()

    faulty.behave(Behaviour())
    node.start()
    node.wait_for_jobs(lambda jobs: [job["status"] for job in jobs] == ["done", "done"])
    assert len(faulty.stored) == 4


def test_a_derived_job_retried_after_its_destination_was_down_sends_what_it_made(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    """Its series is enhanced once: the retry sends the derived series the first attempt made
    (the same files), not a second enhancement of the series per attempt while a PACS is down."""
    faulty.behave(Behaviour(status=0xA700))  # the PACS is out of resources, for now
    node = node_factory(
        [faulty.destination()],
        enhance={"methods": ["baseline"], "self_check": False},
        # Attempts enough that the originals outlive the test's look at the derived job (a
        # loaded machine's `jobs list` takes seconds: with 5, the originals died meanwhile).
        retry={"max_attempts": 30, "initial_delay_seconds": 2, "max_delay_seconds": 2},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    derived = node.wait_for_jobs(
        lambda jobs: part_of(jobs, "derived").get("status") == "failed", timeout=120
    )
    job_id = part_of(derived, "derived")["id"]
    faulty.behave(Behaviour(status=0x0000))  # it is back
    jobs = node.wait_for_jobs(
        lambda jobs: all(job["status"] == "done" for job in jobs) and len(jobs) == 2, timeout=120
    )
    # tried twice at least (its waits for the originals are not counted among its attempts)
    assert part_of(jobs, "derived")["deliveries"][0]["attempts"] >= 2
    log = node.log()
    assert len(re.findall(rf"enhanced job={job_id} method=baseline", log)) == 1, log[-3000:]
    assert f"job sends what an earlier attempt made job={job_id}" in log
    derived_uids = set(faulty.stored) - {sop_instance_uid(p) for p in ct_series}
    assert len(derived_uids) == len(ct_series) + 1  # each image derived, and the metrics SR
    assert all(faulty.stored[uid] == 1 for uid in derived_uids)


def both_failed_once_enhanced(jobs: list[dict[str, Any]]) -> bool:
    """Both jobs of the series failed, the derived one after its enhancement (its outbox made)."""
    return (
        len(jobs) == 2
        and all(job["status"] == "failed" for job in jobs)
        and bool(part_of(jobs, "derived").get("details"))
    )


def assert_originals_came_first(peer: FaultyScp, series: list[Path]) -> None:
    """Every original reached `peer` before any derived image or report, each once."""
    originals = {sop_instance_uid(path) for path in series}
    arrived = list(peer.stored)
    assert set(arrived[: len(originals)]) == originals, arrived
    assert len(arrived) == 2 * len(originals) + 1  # each image derived, and the metrics SR


def test_after_an_outage_the_originals_reach_the_destination_before_their_derived_series(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    """The originals' job is on a longer backoff than its derived job's when the PACS comes
    back: the derived series waits for them and goes right after them, not first (a
    radiologist would meet the enhanced series with nothing beside it). The PACS answered a
    C-ECHO all along (out of resources, not down): the waits leave the originals' own backoff
    as it is, since each extra attempt would be one fewer before they are given up."""
    faulty.behave(Behaviour(status=0xA700))  # the PACS is out of resources, for now
    node = node_factory(
        [faulty.destination()],
        enhance={"methods": ["baseline"], "self_check": False},
        # Originals at 0 s, 5 s, then 15 s after that; the derived job waits for them.
        retry={"initial_delay_seconds": 5, "multiplier": 3, "max_delay_seconds": 600, "jitter": 0},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(
        lambda jobs: (
            part_of(jobs, "originals").get("attempts", 0) >= 2
            and part_of(jobs, "originals").get("status") == "failed"
            and part_of(jobs, "derived").get("status") == "failed"
        ),
        timeout=120,
    )
    faulty.behave(Behaviour(status=0x0000))  # it is back before either job's next attempt

    jobs = node.wait_for_jobs(
        lambda jobs: len(jobs) == 2 and all(job["status"] == "done" for job in jobs), timeout=120
    )
    assert_originals_came_first(faulty, ct_series)
    log = node.log()
    derived_id = part_of(jobs, "derived")["id"]
    deferred = "derived delivery deferred: the destination has none of the originals yet"
    assert f"{deferred} job={derived_id}" in log, log[-3000:]
    assert f"derived job due now: its originals reached the destination job={derived_id}" in log
    # Its waits are said as waits, at INFO, not as failures (its state is `failed` meanwhile).
    assert f"INFO dicomnode.pipeline.runner job waits for its originals job={derived_id}" in log
    assert f"job failed job={derived_id}" not in log


def test_jobs_retried_together_after_an_outage_send_the_originals_first(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    """`jobs retry --status failed` queues a series' two jobs at once: the derived job, with
    nothing to enhance (its first attempt made the series), waits for the originals still
    being sent rather than overtake them in a second sending thread."""
    faulty.behave(Behaviour(status=0xA700))
    node = node_factory(
        [faulty.destination()],
        enhance={"methods": ["baseline"], "self_check": False},
        worker={"workers": 2},  # two sending threads per destination
        retry={"initial_delay_seconds": 600, "max_delay_seconds": 600},  # only the admin's
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    node.wait_for_jobs(both_failed_once_enhanced, timeout=120)
    faulty.behave(Behaviour(delay_seconds=0.5))  # back, and slow: the originals take ~6 s
    node.cli("jobs", "retry", "--status", "failed")

    node.wait_for_jobs(
        lambda jobs: len(jobs) == 2 and all(job["status"] == "done" for job in jobs), timeout=120
    )
    assert_originals_came_first(faulty, ct_series)


def test_a_destination_that_is_back_gets_its_failed_jobs_at_once_the_originals_first(
    node_factory, ct_series: list[Path]
) -> None:
    """The PACS comes back long before the jobs' next attempt (10 minutes away): the probe
    finds it answering a C-ECHO and both jobs go within seconds, the originals first."""
    late = FaultyScp()  # configured, not yet listening: the PACS is down
    node = node_factory(
        [late.destination()],
        enhance={"methods": ["baseline"], "self_check": False},
        retry={"initial_delay_seconds": 600, "max_delay_seconds": 600, "probe_seconds": 1},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    failed = node.wait_for_jobs(both_failed_once_enhanced, timeout=120)
    # Each job names the destination alike: the derived job's reason is its C-ECHO's.
    down = f"cannot associate with faulty (FAULTY@127.0.0.1:{late.port}): "
    assert all(down in job["error"] for job in failed), failed
    late.start()
    try:
        node.wait_for_jobs(lambda jobs: all(job["status"] == "done" for job in jobs), timeout=60)
        assert_originals_came_first(late, ct_series)
        log = node.log()
        back = "destination answers again: its failed jobs are due now destination=faulty"
        assert f"{back} jobs=1" in log, log[-3000:]  # the originals: the derived job waits
    finally:
        late.stop()


def test_an_instance_the_peer_breaks_off_on_does_not_keep_the_rest_of_the_series_from_it(
    node_factory, faulty: FaultyScp, ct_series: list[Path]
) -> None:
    """The PACS aborts the association whenever one instance arrives: the series' others go on
    a new association, and the delivery fails naming that instance (retried, then dead)."""
    poison = sop_instance_uid(ct_series[3])
    faulty.behave(Behaviour(abort_on=poison))
    node = node_factory(
        [faulty.destination()],
        retry={"max_attempts": 2, "initial_delay_seconds": 1, "max_delay_seconds": 1},
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "dead", timeout=120)
    others = {sop_instance_uid(path) for path in ct_series} - {poison}
    assert set(faulty.stored) == others  # everything but the one it will not take
    error = job["deliveries"][0]["error"]
    assert error.startswith(f"broke off the association on 1 of {len(ct_series)} instances")
    assert f"({len(others)} sent)" in error and f"sop={poison}" in error
    assert f"destination broke off the association job=1 destination=faulty sop={poison}" in (
        node.log()
    )


@pytest.mark.parametrize(
    ("misbehave", "reason"),
    [
        ("drip", "of 1000 bytes of a PDU in network.network_timeout=2s"),  # "stalled: 6 of"
        ("flood", "more than 67108864 bytes of P-DATA for one message (an answer's limit)"),
    ],
)
def test_a_destination_that_drips_or_floods_its_answer_is_cut_off(
    node_factory, faulty: FaultyScp, ct_series: list[Path], misbehave: str, reason: str
) -> None:
    """pynetdicom reads a PDU to the length its header announces, restarting its timeout at
    each byte, and keeps a message's fragments until the last: a PACS that dripped its answer
    held the delivery (and the node's stop) for three minutes, one that sent fragments without
    end grew the node by a gigabyte a minute. Each PDU is now read whole within
    network_timeout and a message's P-DATA within a budget; the attempt fails, naming why."""
    faulty.behave(Behaviour(misbehave=misbehave))
    node = node_factory(
        [faulty.destination()],
        network={"network_timeout": 2, "dimse_timeout": 300},
        retry={"max_attempts": 1},
        http={"enabled": True},
    ).start()
    assert storescu(node.port, ct_series[:1]).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: len(jobs) == 1 and jobs[0]["status"] == "dead")
    [delivery] = job["deliveries"]
    assert "the peer's answer broke a limit, association aborted" in delivery["error"]
    assert reason in delivery["error"]
    aborted = rf"WARNING \S+ association aborted peer=127\.0\.0\.1:{faulty.port} reason=.*"
    assert re.search(aborted + re.escape(reason), node.log())
    kind = "stalled" if misbehave == "drip" else "message_too_large"
    assert Scrape(node.http_port).value("dicomnode_answers_aborted_total", reason=kind) == 1
    faulty.release()


def test_a_derived_job_made_before_the_outbox_had_attempt_folders_is_sent_as_it_was_made(
    node_factory, faulty: FaultyScp, ct_series: list[Path], database_url: str
) -> None:
    """An upgrade: a version before 2026-12-02 wrote a failed derived job's series straight into
    the job's outbox folder and recorded no attempt folder. The version after it enhanced such a
    job again, under its own UIDs: a PACS that had part of the old series got a second, whole
    one beside it. It now sends the old files when they are whole, as a release or resend
    already did (the old version's own retry made the same UIDs again)."""
    faulty.behave(Behaviour(status=0xA700))  # out of resources: the derived job fails
    node = node_factory(
        [faulty.destination()],
        enhance={"methods": ["baseline"], "self_check": False},
        retry={"initial_delay_seconds": 600, "max_delay_seconds": 600},  # no retry meanwhile
    ).start()
    assert storescu(node.port, ct_series).returncode == 0
    jobs = node.wait_for_parts(derived="failed", originals="failed", timeout=180)
    node.stop()
    job_id = part_of(jobs, "derived")["id"]

    # As the old version left it: series folders in the job's folder, no "outbox" recorded.
    job_folder = node.data_dir / "spool" / "outbox" / str(job_id)
    [attempt] = list(job_folder.iterdir())
    made = {}
    for series in attempt.iterdir():
        made.update({path.stem: series.name for path in series.glob("*.dcm")})
        series.rename(job_folder / series.name)
    attempt.rmdir()
    db = open_database(database_url or f"sqlite:///{node.data_dir / 'dicomnode.sqlite'}")
    try:
        with db.session() as session:
            select = text("SELECT outputs FROM jobs WHERE id = :id")
            outputs = json.loads(session.execute(select, {"id": job_id}).scalar_one())
            assert outputs["outbox"] == attempt.name  # what the new version records
            old_record = {key: value for key, value in outputs.items() if key != "outbox"}
            update = text("UPDATE jobs SET outputs = :outputs WHERE id = :id")
            session.execute(update, {"outputs": json.dumps(old_record), "id": job_id})
    finally:
        db.engine.dispose()

    faulty.behave(Behaviour(status=0x0000))
    node.start()
    node.cli("jobs", "retry", "--status", "failed")
    node.wait_for_jobs(lambda jobs: all(job["status"] == "done" for job in jobs), timeout=180)
    log = node.log()
    assert log.count(f"enhanced job={job_id} ") == 1, log[-3000:]  # the old version's, only
    assert f"job sends what an earlier attempt made job={job_id}" in log
    assert "outbox=(the job's own folder: an earlier version's)" in log
    assert set(made) <= set(faulty.stored)  # its derived images and report, as they were made
    assert all(faulty.stored[sop] == 1 for sop in made)
