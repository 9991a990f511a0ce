"""The collector settled after start-up (`dicomnode.heap`): what start-up left is frozen, so a
full collection no longer walks it, and the young generation is collected less often."""

import gc

from dicomnode import heap


def test_a_settled_heap_leaves_start_up_out_of_every_collection_until_unsettled() -> None:
    before = gc.get_threshold()
    start_up = [[index] for index in range(10_000)]  # tracked objects that stay
    heap.settle()
    try:
        assert gc.get_threshold() == (heap.YOUNG_OBJECTS, before[1], before[2])
        assert gc.get_freeze_count() >= len(start_up)
        walked = {id(obj) for obj in gc.get_objects()}  # what a full collection looks at
        assert not any(id(obj) in walked for obj in start_up)
        later = [0]
        assert id(later) in {id(obj) for obj in gc.get_objects()}  # new objects still are
    finally:
        heap.unsettle()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    assert id(start_up[0]) in {id(obj) for obj in gc.get_objects()}


def test_the_last_of_two_holders_restores_the_collector() -> None:
    """Two nodes in one process (as in a test): the first to stop leaves the heap settled."""
    before = gc.get_threshold()
    heap.settle()
    heap.settle()
    try:
        heap.unsettle()
        assert gc.get_threshold()[0] == heap.YOUNG_OBJECTS and gc.get_freeze_count() > 0
    finally:
        heap.unsettle()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    heap.unsettle()  # once more than settled: nothing to undo
    assert gc.get_threshold() == before
