"""The worker command's process-wide tuning."""

import gc

from stream.cli import GC_YOUNG_THRESHOLD, tune_garbage_collector


def test_the_worker_collects_cycles_less_often_and_leaves_its_startup_objects_out() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
