"""Set-ups that would lose or hold back data while looking healthy: `serve` refuses them (exit 2,
one line naming the file, port, path or lock) or warns loudly and keeps the data."""

import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dicomnode.db import open_database
from dicomnode.db.generation import LAYOUT_GENERATION
from dicomnode.errors import ConfigError
from tests.conftest import ON_BOTH_DATABASES
from tests.support.dcmtk import storescu
from tests.support.model_files import another_network, damaged, rewritten
from tests.support.node import NodeProcess
from tests.support.ports import wait_for_port


def refusal(node: NodeProcess) -> str:
    """`serve` with the node's config: it must exit 2 at once with one line and no traceback."""
    result = node.cli("serve", check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "node stopped" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_without_destinations_serve_warns_and_jobs_end_stored_which_retention_keeps(
    node_factory, ct_series: list[Path]
) -> None:
    # keep_days of under a second: a done series would be purged within the test
    node = node_factory([], retention={"keep_days": 0.00001, "check_seconds": 1}).start()
    assert storescu(node.port, ct_series[:2]).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "stored")
    assert "sent nowhere" in job["error"] and job["deliveries"] == []
    assert "WARNING dicomnode.node NO DESTINATIONS configured" in node.log()
    assert "node.receive_only = true" in node.log()

    time.sleep(3)  # several retention ticks past keep_days
    assert "0 series" in node.cli("purge", "--dry-run").stdout
    listed = node.cli("jobs", "list", "--status", "stored", "--json").stdout
    assert f'"id": {job["id"]}' in listed
    assert len(list((node.data_dir / "spool" / "instances").rglob("*.dcm"))) == 2


def test_a_receive_only_node_ends_jobs_done_without_the_warning(
    node_factory, ct_series: list[Path]
) -> None:
    node = node_factory([], node={"receive_only": True}).start()
    assert storescu(node.port, ct_series[:2]).returncode == 0
    [job] = node.wait_for_jobs(lambda jobs: jobs and jobs[0]["status"] == "done")
    assert job["error"] is None
    assert "receive only (node.receive_only = true)" in node.log()
    assert "NO DESTINATIONS" not in node.log()


def test_receive_only_with_destinations_is_refused(node_factory) -> None:
    pacs = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    line = refusal(node_factory([pacs], node={"receive_only": True}))
    assert "setting node.receive_only: is true but 1 destination(s) are configured" in line


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda model: model.write_bytes(b"PK\x03\x04 cut short by a failed copy"),
            "is not a .keras model archive (truncated or damaged copy?)",
        ),
        (damaged, "is damaged: its member model.weights.h5 fails its checksum"),
        (
            lambda model: zipfile.ZipFile(model, "w").close(),
            "is not a Keras 3 model archive: it lacks config.json, model.weights.h5",
        ),
        (
            lambda model: rewritten(model, config_json=b"{}"),
            "is not a model of dicomnode's: its config.json describes no Keras model",
        ),
        (
            lambda model: rewritten(model, model_weights_h5=b"not HDF5"),
            "is not a Keras 3 model archive: its model.weights.h5 is no HDF5 file",
        ),
        (
            another_network,
            "is not the 9-1-5 SRCNN: expected SRCNN layers ((64, 9), (32, 1), (1, 5)), "
            "found ((128, 9), (32, 1), (1, 5))",
        ),
        (
            lambda model: rewritten(model, source="srcnn-x2.keras"),
            "holds a x2 model (srcnn_x2), not the x1 that enhance.scale = 1 needs",
        ),
    ],
    ids=[
        "truncated",
        "damaged",
        "empty archive",
        "no model",
        "no weights",
        "another network",
        "another scale",
    ],
)
def test_a_model_file_that_is_not_whole_stops_serve_before_it_listens(
    node_factory, tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    """Told from the archive alone, before the node listens: refused after it (TensorFlow
    loads meanwhile), the node had accepted associations it then dropped, and a service
    manager restarted it into the same failure. The network and its scale are read from its
    config.json: a x2 model copied over the x1 file would have made x2 images where x1 was
    set."""
    models = tmp_path / "models"
    models.mkdir()
    model = models / "srcnn-x1.keras"
    make(model)
    node = node_factory(
        [], enhance={"methods": ["srcnn"], "modalities": ["CT"], "model_dir": str(models)}
    )
    line = refusal(node)
    assert f"at enhance.scale = 1 needs model files: {model} {reason}" in line
    assert not node.data_dir.exists()


def test_a_missing_model_stops_serve_before_anything_is_made_in_the_data_dir(
    node_factory, tmp_path: Path
) -> None:
    """The refusal left a new database and spool behind: in a data_dir on a disk not mounted
    yet, the stray pair the spool identity exists to catch."""
    empty = tmp_path / "no-models"
    empty.mkdir()
    node = node_factory([], enhance={"methods": ["srcnn"], "model_dir": str(empty)})
    line = refusal(node)
    assert "setting enhance.methods: srcnn at enhance.scale = 1 needs" in line
    # The modalities' own files are looked for first: named too.
    assert (
        f"needs model files: {empty / 'srcnn-x1.keras'} does not exist (nor does "
        "srcnn-cr-x1.keras or srcnn-ct-x1.keras or srcnn-dx-x1.keras or srcnn-mr-x1.keras) "
        "(train one"
    ) in line
    assert not node.data_dir.exists()


def test_a_second_serve_on_the_same_data_dir_is_refused_until_the_first_dies(
    node_factory,
) -> None:
    first = node_factory([]).start()
    second = node_factory([], node={"data_dir": str(first.data_dir)})
    lock = first.data_dir / "dicomnode.lock"
    line = refusal(second)
    assert f"lock file {lock} is held by PID {first.pid} on " in line
    assert "node.shared_data_dir" in line

    # The same settings started twice: the other node is named (its PID), not the port it holds
    # (the port is looked at before the lock, which needs the data_dir, is taken).
    again = refusal(first)
    assert f"lock file {lock} is held by PID {first.pid} on " in again
    assert "cannot listen" not in again

    first.kill()  # SIGKILL: the kernel drops the lock with the process
    second.start()
    assert second.stop() == 0


def test_listeners_that_share_a_data_dir_on_purpose_exclude_an_exclusive_one(
    node_factory,
) -> None:
    shared = node_factory([], node={"shared_data_dir": True}).start()
    flagged = node_factory([], node={"data_dir": str(shared.data_dir)})
    serve = [sys.executable, "-m", "dicomnode", "serve", "--shared-data-dir"]
    process = subprocess.Popen(
        [*serve, "--config", str(flagged.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(flagged.port)
        exclusive = node_factory([], node={"data_dir": str(shared.data_dir)})
        assert "held by listeners started with node.shared_data_dir" in refusal(exclusive)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_a_port_in_use_stops_serve_with_exit_2_before_anything_is_made(node_factory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = node_factory([], node={"port": port})
        line = refusal(node)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line
    assert not node.data_dir.exists()  # a database and spool were made, then the port refused


def test_a_data_dir_that_cannot_be_created_stops_serve_naming_the_path(
    node_factory, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    data_dir = tmp_path / "a-file" / "data"
    line = refusal(node_factory([], node={"data_dir": str(data_dir)}))
    assert f"setting node.data_dir: cannot create {data_dir}" in line
    assert "Not a directory" in line


@pytest.mark.skipif(find_spec("psycopg2") is not None, reason="psycopg2 is installed")
def test_a_missing_database_driver_gives_the_install_hint(node_factory) -> None:
    url = "postgresql+psycopg2://node:secret@127.0.0.1:1/dicomnode"
    line = refusal(node_factory([], node={"database_url": url}))
    assert "needs the Python module 'psycopg2', which is not installed" in line
    assert "pip install 'dicomnode[postgresql]'" in line and "secret" not in line


def test_a_damaged_database_is_named_with_what_mends_it_not_try_again(node_factory) -> None:
    """Before: "the database failed: file is not a database (try again)", exit 1, which a
    service manager restarts for ever."""
    node = node_factory([], node={"receive_only": True}).start()
    node.stop()
    database = node.data_dir / "dicomnode.sqlite"
    with database.open("r+b") as file:
        file.write(b"\xff" * 100)  # the header: no longer a database
    line = refusal(node)
    assert f"the database {database} is damaged (file is not a database)" in line
    assert "restore the last backup" in line and "doctor --repair" in line
    listed = node.cli("jobs", "list", check=False)
    assert listed.returncode == 2 and f"the database {database} is damaged" in listed.stderr


@ON_BOTH_DATABASES
def test_a_database_a_newer_version_brought_past_this_one_is_refused(
    node_factory, database_url: str
) -> None:
    """A downgrade: an older version went on as if nothing had changed and misread what it did
    not know (a newer outbox layout ended released jobs dead, their files in place). Each
    version records the layout generation it writes; one older than the database's refuses
    it, `serve` and the admin commands alike, and the data stays as it was."""
    node = node_factory([]).start()
    node.stop()
    url = database_url or f"sqlite:///{node.data_dir / 'dicomnode.sqlite'}"
    db = open_database(url)
    try:
        with db.session() as session:
            kept = text("SELECT generation FROM layout_generation WHERE name = 'layout'")
            assert session.execute(kept).scalar_one() == LAYOUT_GENERATION
            newer = text("UPDATE layout_generation SET generation = :g WHERE name = 'layout'")
            session.execute(newer, {"g": LAYOUT_GENERATION + 1})
    finally:
        db.dispose()
    said = f"was brought to layout generation {LAYOUT_GENERATION + 1} by a newer dicomnode"
    assert said in refusal(node)
    listing = node.cli("jobs", "list", check=False)
    assert listing.returncode == 2 and said in listing.stderr
    for read_only in (False, True):  # the database is left as the newer version made it
        with pytest.raises(ConfigError, match="run the newer version again"):
            open_database(url, read_only=read_only)

    # A database from before generations were kept is read (the guard is not one more table
    # an admin command would call missing), and brought to this generation by the next start.
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE layout_generation"))
    finally:
        engine.dispose()
    assert node.cli("jobs", "list").returncode == 0
    node.start()
    node.stop()
    db = open_database(url, read_only=True)
    try:
        with db.reading() as session:
            assert session.execute(kept).scalar_one() == LAYOUT_GENERATION
    finally:
        db.dispose()
