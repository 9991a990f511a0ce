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


def test_a_job_whose_delivery_never_started_goes_back_before_the_stop_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PACS hangs on job 1's delivery; job 2 waits behind it in the queue. The stop gives
    job 2 back at once: a forced exit during the wait for job 1 (a second signal,
    node.stop_timeout_seconds) used to leave it to its lease, its attempt counted as one its
    worker died in, and a job on its last attempt dead."""
    hanging, release = threading.Event(), threading.Event()

    def hang(*_args: object) -> None:
        hanging.set()
        release.wait(30)

    monkeypatch.setattr(delivery_module, "deliver", hang)
    monkeypatch.setattr(delivery_module, "holds_lease", lambda *_args: True)
    queues = DeliveryQueues(Settings(worker=WorkerSettings(workers=1)), db=None)  # type: ignore[arg-type]
    given_back: list[int] = []
    finished: list[int] = []
    for job_id in (1, 2):
        job = SimpleNamespace(id=job_id, part=JobPart.ORIGINALS, lease_owner="w")
        queues.submit(
            job,  # type: ignore[arg-type]
            ["pacs"],
            [],
            finish=lambda job_id=job_id: finished.append(job_id),
            abandon=lambda job_id=job_id: given_back.append(job_id),
        )
        assert hanging.wait(10)

    stopping = threading.Thread(target=queues.shutdown)
    stopping.start()
    deadline = time.monotonic() + 10
    while not given_back and time.monotonic() < deadline:
        time.sleep(0.01)
    assert given_back == [2] and stopping.is_alive()  # still waiting for job 1's delivery
    release.set()
    stopping.join(10)
    assert not stopping.is_alive()
    assert (given_back, finished) == ([2], [1])  # job 1 finished, given back only once
