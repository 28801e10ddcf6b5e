"""
Tests for :obj:`glimpse.view.panic`: entering panic at once, leaving only
after the hold, per job, driven by the view's changes and a Clock.
"""

from twisted.internet.task import Clock

from glimpse.view.model import Check, Instance
from glimpse.view.panic import Panics, PanicState, step

JOB = ("ams", "shop--prod--web")


def inst(ip, status="passing", name=None):
    """
    An instance of shop/prod/web on ``http`` with one check in ``status``.
    """
    name = name or ip
    check = Check(id=f"{name}:c", name="c", type="ttl", status=status, output="",
                  node_level=False)
    return Instance(id=f"p:{name}:http", product="shop", env="prod", job="web",
                    instance=name, service="http", provider="p", node="n1", ip=ip, port=8080,
                    checks=(check,))


def test_a_job_enters_panic_as_soon_as_too_few_are_healthy():
    """
    Below the threshold (strictly) a job is in panic at once; at it, not.
    """
    assert step(None, 1, 4, 0.5, 10, now=0).panic
    assert not step(None, 2, 4, 0.5, 10, now=0).panic
    assert not step(None, 0, 0, 0.5, 10, now=0).panic  # no instance: nothing to panic about


def test_a_job_leaves_panic_only_after_the_hold():
    """
    Back at the threshold a job stays in panic until its healthy share has
    held for ``hold`` seconds; a dip below starts the hold over.
    """
    s = step(None, 1, 4, 0.5, 10, now=0)
    s = step(s, 3, 4, 0.5, 10, now=5)
    assert s.panic and s.recovered_since == 5
    s = step(s, 3, 4, 0.5, 10, now=14.9)
    assert s.panic
    s = step(s, 1, 4, 0.5, 10, now=14.95)  # flaps back below: the hold starts over
    assert s.panic and s.recovered_since is None
    s = step(s, 4, 4, 0.5, 10, now=20)
    assert s.panic
    s = step(s, 4, 4, 0.5, 10, now=30)
    assert not s.panic and s.since == 30


def test_a_zero_hold_leaves_at_once():
    """
    With --panic-hold=0 a job leaves panic as soon as it is healthy enough.
    """
    s = step(None, 0, 2, 0.5, 0, now=0)
    assert not step(s, 1, 2, 0.5, 0, now=1).panic


def test_describe():
    """
    A state says itself with its counts.
    """
    assert PanicState(True, 0, None, 1, 4).describe(0.5) == (
        "in panic: 1 of 4 instances healthy (25%), below 50%")
    assert PanicState(False, None, None, 4, 4).describe(0.5) == (
        "not in panic: 4 of 4 instances healthy (100%)")


class View:
    """
    Just what :class:`Panics` reads of the view: its jobs' instances, its
    listeners, and what it is told.
    """

    def __init__(self):
        self.zones = {"ams": object()}
        self.jobs = {}
        self.listeners = []
        self.announced = []

    def cached_instances(self, zone, name):
        return self.jobs.get((zone, name))

    def add_listener(self, listener):
        self.listeners.append(listener)

    def announce(self, zone, name):
        self.announced.append((zone, name))

    def set(self, *statuses):
        """
        Give shop/prod/web instances in these statuses and tell the listeners.
        """
        self.jobs[JOB] = tuple(inst(f"10.0.0.{n}", status, name=f"web-{n}")
                               for n, status in enumerate(statuses, 1))
        for listener in self.listeners:
            listener(*JOB)


def test_panics_follow_the_view_and_let_go_after_the_hold_on_the_clock():
    """
    A change of the view that leaves too few healthy puts the job in panic
    (the answers recomputed for that change see it); once enough are
    healthy again it stays in panic for the hold, then the clock lets it
    go and tells the view, so that DNS and HTTP answer anew.
    """
    clock, view = Clock(), View()
    panics = Panics(view, clock, threshold=0.5, hold=5)
    panics.start()
    view.set("passing", "passing", "passing", "passing")
    assert not panics.in_panic(*JOB)
    view.set("passing", "critical", "critical", "critical")
    assert panics.in_panic(*JOB) and panics.count() == 1
    clock.advance(3)
    view.set("passing", "passing", "passing", "critical")
    clock.advance(4)
    assert panics.in_panic(*JOB) and view.announced == []
    clock.advance(1)
    assert not panics.in_panic(*JOB)
    assert view.announced == [JOB]
    panics.stop()
    assert not clock.getDelayedCalls()


def test_a_job_not_counted_yet_is_counted_from_the_answer_being_built():
    """
    The first answer of a job (served before the view's change reaches the
    listeners) is already in panic when it should be.
    """
    clock, view = Clock(), View()
    panics = Panics(view, clock, threshold=0.5, hold=5)
    instances = (inst("10.0.0.1", "critical"), inst("10.0.0.2", "critical"))
    assert panics.in_panic("ams", "shop--prod--api", instances)


def test_panic_mode_off_keeps_nothing():
    """
    Without --panic-threshold no job is ever in panic, and no clock runs.
    """
    clock, view = Clock(), View()
    panics = Panics(view, clock, threshold=None)
    panics.start()
    assert view.listeners == [] and not clock.getDelayedCalls()
    assert not panics.in_panic("ams", "x", (inst("10.0.0.1", "critical"),))


def test_a_job_dropped_from_the_view_forgets_its_state():
    """
    A job the view no longer holds (unused, or its zone gone) loses its state.
    """
    clock, view = Clock(), View()
    panics = Panics(view, clock, threshold=0.5, hold=5)
    view.set("critical")
    assert panics.in_panic(*JOB)
    del view.jobs[JOB]
    view.listeners[0](*JOB)
    assert panics.state(*JOB) is None
