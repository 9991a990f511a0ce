"""Fixtures that own real peer processes (Orthanc, the node) and their temporary directories."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnode.db import Database, open_database
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.postgres import POSTGRES_BIN, PostgresServer, missing_binaries
from tests.support.series import write_ct_series

REQUIRED_TOOLS = ("storescu", "storescp", "echoscu", "Orthanc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        # Fail loudly: a silently skipped network suite would hide a broken set-up.
        raise pytest.UsageError(
            f"missing {', '.join(missing)}: install Debian packages dcmtk and orthanc "
            "(see README, 'Run the tests')"
        )
    _keep_the_part_of_the_run(config, items)


def _keep_the_part_of_the_run(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test runs the suite in two parts, DICOMNODE_TEST_PART=parallel (xdist workers)
    then =serial (the tests marked `serial`, alone): chosen here, not with `-m`, so that a `-m`
    of the caller's narrows both parts instead of replacing the split."""
    part = os.environ.get("DICOMNODE_TEST_PART", "")
    if part not in ("parallel", "serial"):
        return
    keep = [
        item for item in items if (item.get_closest_marker("serial") is None) != (part == "serial")
    ]
    if len(keep) < len(items):
        kept = set(keep)
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = keep


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "orthanc").start()
    yield server
    server.stop()


def pacs_destination(server: Orthanc, name: str = "pacs") -> dict[str, object]:
    return {
        "name": name,
        "ae_title": server.ae_title,
        "host": "127.0.0.1",
        "port": server.dicom_port,
    }


# Put on a module (`pytestmark = ON_BOTH_DATABASES`) to run each of its tests on SQLite and on
# PostgreSQL: the `db` and `node_factory` fixtures then use the backend of the test's parameter.
ON_BOTH_DATABASES = pytest.mark.parametrize(
    "database_backend", ["sqlite", "postgresql"], indirect=True
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (each test still gets its own database)."""
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"PostgreSQL server binaries not found ({', '.join(missing)} in {POSTGRES_BIN}): "
            "install the Debian package postgresql"
        )
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """SQLite, unless the test is parametrised over backends (ON_BOTH_DATABASES)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(database_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The node's `database_url`: a fresh PostgreSQL database, or "" (SQLite, the node's
    default file in its data dir)."""
    if database_backend != "postgresql":
        yield ""
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.database()
    yield url
    server.drop(url)


@pytest.fixture
def db(tmp_path: Path, database_url: str) -> Iterator[Database]:
    """The job tables, opened in this process: on the test's backend (a SQLite file by default)."""
    database = open_database(database_url or f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    yield database
    database.dispose()


@pytest.fixture
def node_factory(tmp_path: Path, database_url: str) -> Iterator:  # type: ignore[type-arg]
    """Build node processes (started by the test); all are stopped at teardown."""
    nodes: list[NodeProcess] = []

    def make(
        destinations: list[dict[str, object]],
        peers: list[dict[str, object]] | None = None,
        **overrides: dict[str, object],
    ) -> NodeProcess:
        if database_url:
            overrides = {
                **overrides,
                "node": {"database_url": database_url, **overrides.get("node", {})},
            }
        node = NodeProcess(tmp_path / f"node{len(nodes)}", destinations, overrides, peers)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def ct_series(tmp_path: Path) -> list[Path]:
    """A 12-instance CT series of real pixels (the CT slice in tests/data, varied)."""
    return write_ct_series(tmp_path / "ct-series", 12)
