"""The start-up heap is frozen out of the cyclic collector's later passes."""

from __future__ import annotations

import gc

from gateway import heap


def test_settle_moves_the_heap_to_the_permanent_generation() -> None:
    made_before = [[]]
    made_before[0].append(made_before)  # a cycle the collector tracks
    try:
        frozen = heap.settle()
        assert frozen == gc.get_freeze_count() > 0
        # a full collection no longer walks what existed at the freeze
        assert not any(obj is made_before for obj in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
