"""
The garbage collector in the running server: startup's objects frozen out
of collections, and every collection's pause measured for ``/metrics``.
"""

import gc
import weakref

from twisted.internet.task import Clock

from glimpse.http import GlimpseCollector, make_registry
from glimpse.metrics import GCPauses
from glimpse.testing import EmptyTopology


class _Node:
    pass


def test_startup_objects_are_left_out_of_collections():
    """
    What is alive when the service starts is frozen: a collection no longer
    walks it (it is not among the objects the collector tracks) though it
    stays alive; what is made later is still collected, cycles included,
    and the collection's pause counted; stopping gives the frozen objects
    back.
    """
    made_at_start = _Node()
    callbacks = list(gc.callbacks)
    pauses = GCPauses()
    pauses.startService()
    try:
        assert pauses.frozen == gc.get_freeze_count() > 0
        assert not any(o is made_at_start for o in gc.get_objects())
        cycle = _Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
        assert sum(pauses.pauses[2].counts) == 1 and pauses.pauses[2].total > 0
    finally:
        pauses.stopService()
    assert gc.get_freeze_count() == 0 and pauses.frozen == 0
    assert any(o is made_at_start for o in gc.get_objects())
    assert gc.callbacks == callbacks


def test_each_collection_pause_is_counted_by_generation():
    """
    A collection's pause (from its start to its end, on the timer given)
    lands in its generation's bucket and sum, which a scrape shows.
    """
    now = [100.0]

    class FakeGC:
        def __init__(self):
            self.callbacks = []
            self.frozen = 0

        def collect(self):
            pass

        def freeze(self):
            self.frozen = 1234

        def unfreeze(self):
            self.frozen = 0

        def get_freeze_count(self):
            return self.frozen

    fake = FakeGC()
    pauses = GCPauses(timer=lambda: now[0], collector=fake)
    pauses.startService()
    [callback] = fake.callbacks

    def collection(generation, seconds):
        callback("start", {"generation": generation})
        now[0] += seconds
        callback("stop", {"generation": generation, "collected": 0, "uncollectable": 0})

    collection(0, 0.0002)
    collection(0, 0.0004)
    collection(2, 0.12)
    registry, _ = make_registry(GlimpseCollector(EmptyTopology(), Clock(), gc_pauses=pauses))
    value = registry.get_sample_value
    assert value("glimpse_gc_pause_seconds_count", {"generation": "0"}) == 2
    assert value("glimpse_gc_pause_seconds_bucket", {"generation": "0", "le": "0.001"}) == 2
    assert value("glimpse_gc_pause_seconds_count", {"generation": "1"}) == 0
    assert value("glimpse_gc_pause_seconds_bucket", {"generation": "2", "le": "0.1"}) == 0
    assert value("glimpse_gc_pause_seconds_bucket", {"generation": "2", "le": "0.25"}) == 1
    assert abs(value("glimpse_gc_pause_seconds_sum", {"generation": "2"}) - 0.12) < 1e-9
    assert value("glimpse_gc_frozen_objects") == 1234
    pauses.stopService()
    assert fake.callbacks == [] and fake.frozen == 0
