"""Fixtures that own real peer processes (Orthanc, the node) and their temporary directories."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
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


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Build node processes (started by the test); all are stopped at teardown."""
    nodes: list[NodeProcess] = []

    def make(
        destinations: list[dict[str, object]],
        peers: list[dict[str, object]] | None = None,
        **overrides: dict[str, object],
    ) -> NodeProcess:
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
