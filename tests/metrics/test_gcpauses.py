"""
The garbage collector in the running server: startup's objects frozen out
of collections, the view's values never in them, and every collection's
pause measured for ``/metrics``.
"""

import gc
import typing
import weakref

import attrs
from twisted.internet.task import Clock

from glimpse.http import GlimpseCollector, make_registry
from glimpse.metrics import GCPauses
from glimpse.testing import EmptyTopology
from glimpse.view.model import Check, Instance, instances_from_health


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


def _health(job, n):
    return [{"Node": {"Node": f"node-{i}", "Address": f"10.0.0.{i}"},
             "Service": {"ID": f"p:shop--prod--{job}:{job}-{i}:http",
                         "Service": f"shop--prod--{job}", "Address": f"10.1.0.{i}",
                         "Port": 8080, "Meta": {"glimpse-provider": "p",
                                                "glimpse-instance": f"{job}-{i}",
                                                "glimpse-port": "http", "version": "1"}},
             "Checks": [{"CheckID": "serfHealth", "Name": "Serf", "Status": "passing",
                         "Output": "", "ServiceID": ""},
                        {"CheckID": f"c{i}", "Name": "tcp", "Status": "passing",
                         "Output": "ok", "ServiceID": f"p:shop--prod--{job}:{job}-{i}:http",
                         "Type": "tcp"}]} for i in range(1, n + 1)]


def test_full_collections_do_not_walk_the_view():
    """
    The instances and checks the view is made of are not in the
    collector's tracked set, so a full collection (every answer waits
    while it runs) does not walk them however large the view grows: 1,000
    instances add none of their 4,000 objects to what it walks.  Reference
    counting still frees each the moment the view drops it.
    """
    gc.collect()
    before = len(gc.get_objects())
    view = instances_from_health(_health("web", 1000))
    assert len(view) == 1000
    for instance in view:
        assert not gc.is_tracked(instance) and not gc.is_tracked(instance.checks)
        assert not any(gc.is_tracked(check) for check in instance.checks)
    gc.collect()
    # The view's own tuple and what the collector keeps of its own.
    assert len(gc.get_objects()) - before < 20
    gone = [weakref.ref(view[0]), weakref.ref(view[0].checks[1])]
    del view
    assert [ref() for ref in gone] == [None, None]


def _atomic_or_value(kind, values):
    # A field type an instance or check may hold without ever being part
    # of a reference cycle: atomic, a tuple of such, or one of the values.
    if kind in (str, int, bool) or kind in values:
        return True
    if typing.get_origin(kind) is tuple:
        return all(_atomic_or_value(k, values) for k in typing.get_args(kind) if k is not ...)
    return False


def test_view_values_cannot_hold_a_reference_cycle():
    """
    Leaving the view's values out of garbage collection is sound only
    because none can be part of a reference cycle: they are frozen, and
    every field holds atomic values, tuples of them, or checks.  A field
    that could hold a list, a dict or an object that refers back would
    make a cycle possible, and such a cycle would never be freed: this
    fails first.
    """
    for cls in (Check, Instance):
        assert attrs.has(cls) and cls.__setattr__ is not object.__setattr__, cls
        attrs.resolve_types(cls)
        for field in attrs.fields(cls):
            assert _atomic_or_value(field.type, (Check,)), (cls.__name__, field.name, field.type)
