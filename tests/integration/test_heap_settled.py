"""A node settles the collector once it has started (`dicomnode.heap`), and undoes it when it
stops, for a process that goes on (as this test's does)."""

import gc
from pathlib import Path

from dicomnode import heap
from tests.support.node import listener_only_node


def test_a_started_node_has_frozen_what_start_up_loaded(tmp_path: Path) -> None:
    before = gc.get_threshold()
    node = listener_only_node(tmp_path)
    node.start()
    try:
        assert gc.get_freeze_count() > 10_000  # the node's modules, pydicom's dictionaries, ...
        assert gc.get_threshold()[0] == heap.YOUNG_OBJECTS
    finally:
        node.stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
