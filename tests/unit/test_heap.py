"""The collector settled after start-up (`dicomnode.heap`): what start-up left is frozen, so a
full collection no longer walks it, and the young generation is collected less often."""

import gc

from dicomnode import heap


def test_a_settled_heap_leaves_start_up_out_of_every_collection_until_unsettled() -> None:
    before = gc.get_threshold()
    start_up = [[index] for index in range(10_000)]  # tracked objects that stay
    previous = heap.settle()
    try:
        assert previous == before
        assert gc.get_threshold() == (heap.YOUNG_OBJECTS, before[1], before[2])
        assert gc.get_freeze_count() >= len(start_up)
        walked = {id(obj) for obj in gc.get_objects()}  # what a full collection looks at
        assert not any(id(obj) in walked for obj in start_up)
        later = [0]
        assert id(later) in {id(obj) for obj in gc.get_objects()}  # new objects still are
    finally:
        heap.unsettle(previous)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    assert id(start_up[0]) in {id(obj) for obj in gc.get_objects()}
