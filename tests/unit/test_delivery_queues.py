"""The per-destination delivery queues as the node stops (pipeline/delivery.py DeliveryQueues):
threads and queues only; the delivery itself and the job table are stand-ins."""

import threading
import time
from types import SimpleNamespace

import pytest

import dicomnode.pipeline.delivery as delivery_module
from dicomnode.config import Settings, WorkerSettings
from dicomnode.pipeline.delivery import DeliveryQueues
from dicomnode.status import JobPart


class Queues:
    """DeliveryQueues with one thread per destination, whose deliveries to `hanging_at` hang
    until `release` is set; what was finished and given back, by job id."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hanging_at: tuple[str, ...]) -> None:
        self.release = threading.Event()
        self.hanging: list[str] = []
        self.given_back: list[int] = []
        self.finished: list[int] = []
        self.delivered: list[str] = []  # each destination a delivery ran for

        def deliver(*args: object) -> None:
            name = str(args[4])
            self.delivered.append(name)
            if name in hanging_at:
                self.hanging.append(name)
                self.release.wait(30)

        monkeypatch.setattr(delivery_module, "deliver", deliver)
        monkeypatch.setattr(delivery_module, "holds_lease", lambda *_args: True)
        settings = Settings(worker=WorkerSettings(workers=1))
        self.queues = DeliveryQueues(settings, db=None)  # type: ignore[arg-type]

    def submit(
        self, job_id: int, destinations: list[str], outgoing: list[list[str]] | None = None
    ) -> None:
        """Job `job_id` handed over with `outgoing` (default: a series of one instance)."""
        job = SimpleNamespace(id=job_id, part=JobPart.ORIGINALS, lease_owner="w")
        self.queues.submit(
            job,  # type: ignore[arg-type]
            destinations,
            [["an instance"]] if outgoing is None else outgoing,  # type: ignore[list-item]
            finish=lambda: self.finished.append(job_id),
            abandon=lambda: self.given_back.append(job_id),
        )

    def wait_hanging(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.hanging) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.hanging) == count


def test_a_job_whose_delivery_never_started_goes_back_before_the_stop_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PACS hangs on job 1's delivery; job 2 waits behind it in the queue. The stop gives
    job 2 back at once: a forced exit during the wait for job 1 (a second signal,
    node.stop_timeout_seconds) used to leave it to its lease, its attempt counted as one its
    worker died in, and a job on its last attempt dead."""
    site = Queues(monkeypatch, hanging_at=("pacs",))
    site.submit(1, ["pacs"])
    site.wait_hanging(1)
    site.submit(2, ["pacs"])
    stopping = threading.Thread(target=site.queues.shutdown)
    stopping.start()
    deadline = time.monotonic() + 10
    while not site.given_back and time.monotonic() < deadline:
        time.sleep(0.01)
    assert site.given_back == [2] and stopping.is_alive()  # still waiting for job 1's delivery
    site.release.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert (site.given_back, site.finished) == ([2], [1])  # job 1 finished, given back only once


def test_a_job_with_one_delivery_under_way_goes_back_after_it_and_a_late_one_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Job 1 goes to two destinations, both busy: its delivery to `pacs` hangs, the one to
    `other` waits behind job 0's. Its lease is still in use, so it goes back only once the
    delivery under way ended. A job a runner hands over after the stop began goes back at once,
    none of it sent."""
    site = Queues(monkeypatch, hanging_at=("pacs", "other"))
    site.submit(0, ["other"])
    site.submit(1, ["pacs", "other"])
    site.wait_hanging(2)
    site.queues.close()
    assert site.given_back == []
    site.submit(2, ["pacs"])
    assert site.given_back == [2]
    stopping = threading.Thread(target=site.queues.shutdown)
    stopping.start()
    site.release.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert (site.given_back, site.finished) == ([2, 1], [0])
    assert site.queues.jobs_in_flight(JobPart.ORIGINALS) == 0


def test_a_job_with_nothing_to_send_finishes_even_as_the_node_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA held every derived series back: each delivery is recorded (done, nothing sent) and
    the job finishes held. Given back at a stop instead, it was enhanced again, all of it, at
    the next start."""
    site = Queues(monkeypatch, hanging_at=())
    site.queues.close()
    site.submit(3, ["pacs", "other"], outgoing=[])
    assert (site.given_back, site.finished) == ([], [3])
    assert sorted(site.delivered) == ["other", "pacs"]
    assert site.queues.jobs_in_flight(JobPart.ORIGINALS) == 0
