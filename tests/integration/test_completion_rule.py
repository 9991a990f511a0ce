"""A series is complete when its sender says so (A-RELEASE after the last instance, then
`release_quiet_seconds` of quiet) or, whatever the sender did, after `series_quiet_seconds`.
The rule on a real SQLite file and PostgreSQL (the completion tick's row locks), then through a
real node with DCMTK and pynetdicom senders."""

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pynetdicom import AE

import dicomnode.node as node_module
import dicomnode.pipeline.methods as methods_module
from dicomnode.config import (
    CompletionSettings,
    Destination,
    EnhanceSettings,
    NodeSettings,
    Settings,
    WorkerSettings,
)
from dicomnode.db import Database, open_database
from dicomnode.db.clock import db_now
from dicomnode.db.instances import (
    create_jobs_for_quiet_series,
    mark_series_released,
    seconds_to_next_completion,
)
from dicomnode.db.models import Job, Series
from dicomnode.node import Node
from dicomnode.receive.scp import StorageReceiver
from dicomnode.receive.status import SUCCESS
from dicomnode.spool import Spool
from dicomnode.status import JobPart
from tests.conftest import ON_BOTH_DATABASES
from tests.integration.test_job_table import receive
from tests.support.dcmtk import StoreScp, storescu
from tests.support.node import NodeProcess, listener_only_node, started_in_a_thread
from tests.support.ports import free_port
from tests.support.scu import arrival_of
from tests.support.series import write_ct_series

ORIGINALS = [JobPart.ORIGINALS]


def complete(db: Database, release_quiet: float = 0.2) -> list[int]:
    return create_jobs_for_quiet_series(db, 3600, ["pacs"], ORIGINALS, release_quiet)


@ON_BOTH_DATABASES
def test_a_released_series_is_complete_after_the_short_quiet_time(db: Database) -> None:
    receive(db, "1.2.3.4", 3)
    receive(db, "1.2.3.5", 3)
    mark_series_released(db, ["1.2.3.4"])
    assert complete(db) == []  # released, but not yet quiet for release_quiet_seconds
    time.sleep(0.3)
    assert len(complete(db)) == 1  # only the released series; the other waits for 3600 s
    assert complete(db, release_quiet=0) == []  # 0: the release rule is off


@ON_BOTH_DATABASES
def test_an_instance_after_the_release_waits_for_its_own_release(db: Database) -> None:
    receive(db, "1.2.3.4", 3)
    mark_series_released(db, ["1.2.3.4"])
    receive(db, "1.2.3.4", 1)  # another association is still sending into the series
    time.sleep(0.3)
    assert complete(db) == []
    mark_series_released(db, ["1.2.3.4"])
    time.sleep(0.3)
    assert len(complete(db)) == 1


def assert_due_at(db: Database, when: datetime, release_quiet: float = 0.2) -> None:
    """`seconds_to_next_completion` says `when`, by the database's clock."""
    with db.session() as session:
        before = db_now(session)
    seconds = seconds_to_next_completion(db, 3600, release_quiet)
    with db.session() as session:
        after = db_now(session)
    assert seconds is not None
    assert (when - after).total_seconds() <= seconds <= (when - before).total_seconds()


@ON_BOTH_DATABASES
def test_the_next_due_time_is_when_the_first_pending_series_completes(db: Database) -> None:
    """What the completion tick waits for: the earliest of each pending series' quiet time,
    or its release time once released; nothing when no series is pending."""
    assert seconds_to_next_completion(db, 3600, 0.2) is None
    receive(db, "1.2.3.4", 3)
    receive(db, "1.2.3.5", 3)
    with db.session() as session:
        received = {s.series_uid: s.last_received_at for s in session.query(Series)}
    first = min(received.values())
    assert_due_at(db, first + timedelta(seconds=3600))
    mark_series_released(db, ["1.2.3.5"])
    assert_due_at(db, received["1.2.3.5"] + timedelta(seconds=0.2))
    assert_due_at(db, first + timedelta(seconds=3600), release_quiet=0)  # rule off
    time.sleep(0.3)
    assert len(complete(db)) == 1  # 1.2.3.5 became jobs; 1.2.3.4 is still pending
    assert_due_at(db, received["1.2.3.4"] + timedelta(seconds=3600))
    assert len(create_jobs_for_quiet_series(db, 0, ["pacs"], ORIGINALS)) == 1
    assert seconds_to_next_completion(db, 3600, 0.2) is None


def test_a_new_job_is_run_at_once_not_at_the_runners_next_poll(tmp_path: Path) -> None:
    """The completion tick tells the runners of the jobs it made: with a runner that polls
    once a minute, the originals still go seconds after the release (before, the first poll
    after the one at start came a minute later)."""
    series = write_ct_series(tmp_path / "series", 3, seed=5)
    with StoreScp(tmp_path / "pacs") as pacs:
        node = NodeProcess(
            tmp_path / "node",
            [{"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": pacs.port}],
            {
                "completion": {"series_quiet_seconds": 3600, "release_quiet_seconds": 0.5},
                "worker": {"poll_seconds": 60},
            },
        ).start()
        try:
            time.sleep(1)  # the runners' tick at start has run: the next is a minute away
            assert storescu(node.port, series).returncode == 0
            (job,) = node.wait_for_jobs(
                lambda jobs: [j["status"] for j in jobs] == ["done"], timeout=30
            )
            assert job["part"] == "originals"
            assert len(list((tmp_path / "pacs").iterdir())) == len(series)
        finally:
            node.stop()


def test_the_completion_tick_comes_back_when_the_next_series_is_due(tmp_path: Path) -> None:
    """The completion tick runs every `release_quiet_seconds` here (8 s: the runners poll once
    a minute); a series released between two ticks becomes a job when its quiet time is over,
    not at the first tick after that (up to a round later: before, 8 + ~7 s here)."""
    quiet = 8.0
    series = write_ct_series(tmp_path / "series", 2, seed=7)
    with StoreScp(tmp_path / "pacs") as pacs:
        node = Node(
            Settings(
                node=NodeSettings(host="127.0.0.1", port=free_port(), data_dir=str(tmp_path / "d")),
                completion=CompletionSettings(
                    series_quiet_seconds=3600, release_quiet_seconds=quiet
                ),
                worker=WorkerSettings(workers=0, poll_seconds=60),
                enhance=EnhanceSettings(methods=[]),
                destinations=[Destination("pacs", "STORESCP", "127.0.0.1", pacs.port)],
            )
        )
        node.start()
        try:
            time.sleep(1)  # the tick at start has run: the next round is 7 s away
            assert storescu(node.settings.node.port, series).returncode == 0
            deadline = time.monotonic() + 3 * quiet
            while True:
                with node.db.session() as session:
                    jobs = session.query(Job.created_at).all()
                    (series_row,) = session.query(Series).all()
                if jobs or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(jobs) == 1, "no job was made"
            assert series_row.released_at >= series_row.last_received_at  # released
            # Due 8 s after the last instance (the rule's own reference; the release is stamped
            # a few ms later); the next round would have been ~7 s after that.
            after_last = (jobs[0].created_at - series_row.last_received_at).total_seconds()
            assert quiet <= after_last < quiet + 3
        finally:
            node.stop()


def test_a_node_stops_while_its_completion_tick_runs(tmp_path: Path, monkeypatch) -> None:
    """The scheduler's shutdown holds its job lock while it waits for the ticks that run: a
    completion tick that went on to change the scheduler's plan then waited for ever, and the
    node's stop with it. (The tick is slowed so that the stop comes while it runs.)"""
    entered = threading.Event()
    real = node_module.create_jobs_for_quiet_series

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        entered.set()
        time.sleep(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(node_module, "create_jobs_for_quiet_series", slow)
    node = listener_only_node(tmp_path)
    node.start()
    assert entered.wait(10)
    stopping = threading.Thread(target=node.stop, daemon=True)
    stopping.start()
    stopping.join(30)  # a hang, not a speed: it returns within the tick's second
    assert not stopping.is_alive()


def test_the_originals_go_while_the_models_load(tmp_path: Path, monkeypatch) -> None:
    """A node starts its router before it loads (and warms) the models, seconds of TensorFlow:
    a series that arrives meanwhile is at the PACS before the models are ready. (Loading is
    held back here until the originals are there; it used to come first, and nothing went.)"""
    models_may_load = threading.Event()

    def held_back(settings: Settings) -> int:
        models_may_load.wait(60)
        return 0

    monkeypatch.setattr(methods_module, "load_models", held_back)
    series = write_ct_series(tmp_path / "series", 3, seed=6)
    with StoreScp(tmp_path / "pacs") as pacs:
        enhance = EnhanceSettings(methods=["baseline"])
        node, starting = started_in_a_thread(tmp_path / "d", pacs.port, enhance)
        try:
            assert storescu(node.settings.node.port, series).returncode == 0
            deadline = time.monotonic() + 30
            while len(list((tmp_path / "pacs").iterdir())) < len(series):
                assert time.monotonic() < deadline, "the originals waited for the models"
                time.sleep(0.2)
            assert starting.is_alive()  # still loading the models
        finally:
            models_may_load.set()
            starting.join(30)
            node.stop()


def test_the_originals_go_seconds_after_the_sender_releases(tmp_path: Path) -> None:
    series = write_ct_series(tmp_path / "series", 5, seed=3)
    with StoreScp(tmp_path / "pacs") as pacs:
        node = NodeProcess(
            tmp_path / "node",
            [{"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": pacs.port}],
            {"completion": {"series_quiet_seconds": 3600, "release_quiet_seconds": 1}},
        ).start()
        try:
            assert storescu(node.port, series).returncode == 0
            (job,) = node.wait_for_jobs(lambda jobs: [j["status"] for j in jobs] == ["done"])
            assert job["part"] == "originals"  # well before series_quiet_seconds
            received = {dcmread(p).SOPInstanceUID for p in (tmp_path / "pacs").iterdir()}
            assert received == {dcmread(p).SOPInstanceUID for p in series}
        finally:
            node.stop()


def test_an_aborted_association_leaves_the_series_to_the_quiet_rule(tmp_path: Path) -> None:
    (path,) = write_ct_series(tmp_path / "series", 1, seed=4)
    node = NodeProcess(
        tmp_path / "node",
        [],
        {"completion": {"series_quiet_seconds": 3600, "release_quiet_seconds": 0.5}},
    ).start()
    try:
        ae = AE(ae_title="ABORTER")
        dataset = dcmread(path)
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.send_c_store(dataset).Status == 0x0000
        assoc.abort()  # the sender did not say it is done
        time.sleep(3)  # six release-quiet periods and several completion ticks
        assert node.jobs() == []
    finally:
        node.stop()


class _ClosingAssociation:
    """What the receiver's handlers read of an association whose connection closes: the caller,
    its contexts, and pynetdicom's state (Sta13: after our A-RELEASE-RP, or after the A-ABORT
    it sends for a PDU out of place)."""

    accepted_contexts = ()
    rejected_contexts = ()
    requestor = SimpleNamespace(ae_title="MODALITY", address="127.0.0.1")
    dul = SimpleNamespace(socket=None, state_machine=SimpleNamespace(current_state="Sta13"))

    def __init__(self, released: bool) -> None:
        self._sent_release = released


def _store_one(tmp_path: Path, assoc: _ClosingAssociation) -> tuple[StorageReceiver, str]:
    """A receiver on a real SQLite file and spool that stored one instance on `assoc`."""
    [source] = write_ct_series(tmp_path / "series", 1, size=64)
    database = open_database(f"sqlite:///{tmp_path / 'n.db'}")
    receiver = StorageReceiver(Settings(), Spool(tmp_path / "spool"), database)
    receiver.handle_established(SimpleNamespace(assoc=assoc))  # type: ignore[arg-type]
    dataset = dcmread(source)
    assert receiver.store(arrival_of(dataset, assoc)) == SUCCESS
    return receiver, dataset.SeriesInstanceUID


def _released_at(receiver: StorageReceiver, series_uid: str) -> object:
    with receiver.db.session() as session:
        series = session.get(Series, series_uid)
        assert series is not None
        return series.released_at


@pytest.mark.parametrize("close_first", [True, False], ids=["close-first", "release-first"])
def test_a_release_counts_whichever_of_its_two_events_comes_first(
    tmp_path: Path, close_first: bool
) -> None:
    """pynetdicom fires EVT_RELEASED and EVT_CONN_CLOSE from two threads; on a busy machine the
    close came first, the release found the association's series gone and the series waited
    out series_quiet_seconds (seen in a parallel test run)."""
    assoc = _ClosingAssociation(released=True)
    receiver, series_uid = _store_one(tmp_path, assoc)

    handlers = [receiver.handle_closed, receiver.handle_released]
    for handle in handlers if close_first else reversed(handlers):
        handle(SimpleNamespace(assoc=assoc))  # type: ignore[arg-type]

    assert _released_at(receiver, series_uid) is not None
    time.sleep(0.3)
    assert len(complete(receiver.db)) == 1  # the release rule, not the 3600 s quiet rule


def test_an_association_aborted_for_a_pdu_out_of_place_is_no_release(tmp_path: Path) -> None:
    """pynetdicom answers a PDU out of place with an A-ABORT and waits in Sta13 for the close,
    as after a release: the series it carried waits for the quiet rule."""
    assoc = _ClosingAssociation(released=False)
    receiver, series_uid = _store_one(tmp_path, assoc)
    receiver.handle_closed(SimpleNamespace(assoc=assoc))  # type: ignore[arg-type]
    assert _released_at(receiver, series_uid) is None
