"""
Unit tests of :obj:`glimpse.http.hub` and the stream plumbing of
:obj:`glimpse.http.follow`: pure diffs, a :class:`Clock` for waits and heartbeats, a
fake request for slow clients.  The same behaviour against a real Consul
is in test_subscriptions_consul.py.
"""

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from glimpse.http import HTTPError
from glimpse.http.bodies import body_index
from glimpse.http.events import item_events, replay
from glimpse.http.follow import Stream, parse_wait
from glimpse.http.hub import Hub


class FakeTopology:
    """
    What the hub needs of a topology: listeners to call, and ``touch``.
    """

    def __init__(self):
        self.listeners = []
        self.touched = []

    def add_listener(self, listener):
        self.listeners.append(listener)

    def touch(self, zone, name):
        self.touched.append((zone, name))

    def change(self, zone, name):
        for listener in self.listeners:
            listener(zone, name)


class StreamRequest:
    """
    What a :class:`Stream` uses of a request, recording what is written.
    (twisted.web's DummyRequest pulls from a registered producer in a loop
    until finished, which a stream never is.)
    """

    def __init__(self):
        self.written = []
        self.finished = False
        self.producer = None
        self._finish = Deferred()

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        assert not self.finished
        self.written.append(data)

    def finish(self):
        self.finished = True
        self._finish.callback(None)

    def notifyFinish(self):
        return self._finish


items = st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3), max_size=6)
bodies = st.builds(lambda it, t: {"truncated": t, "instances": [
    {"id": k, "v": v} for k, v in sorted(it.items())]}, items, st.booleans())


@given(st.lists(bodies, min_size=1, max_size=8))
def test_replaying_diffs_on_the_snapshot_gives_the_last_body(sequence):
    """
    Whatever the sequence of answers, the snapshot of the first plus the
    events between each pair rebuild the last answer exactly.
    """
    events = []
    for old, new in pairwise(sequence):
        events.extend(item_events(old, new, "instances", "id"))
    rebuilt = replay(sequence[0], events, "instances", "id")
    assert rebuilt == sequence[-1]


def test_index_follows_content():
    """
    Equal answers have equal indexes, different ones differ.
    """
    assert body_index({"a": [1, 2]}) == body_index({"a": [1, 2]})
    assert body_index({"a": [1, 2]}) != body_index({"a": [2, 1]})
    assert 0 < body_index({}) < 2**53


@pytest.mark.parametrize(("raw", "seconds"), [(b"30s", 30), (b"500ms", 0.5), (b"2m", 120),
                                         (b"10", 10)])
def test_wait_durations(raw, seconds):
    """
    ``wait`` takes the durations Consul users write.
    """
    request = DummyRequest([])
    request.args[b"wait"] = [raw]
    assert parse_wait(request) == seconds


@pytest.mark.parametrize("raw", [b"forever", b"-1s", b"11m"])
def test_bad_wait_is_a_400(raw):
    """
    A wait that is not a duration, or longer than 10 minutes, is refused.
    """
    request = DummyRequest([])
    request.args[b"wait"] = [raw]
    with pytest.raises(HTTPError) as e:
        parse_wait(request)
    assert e.value.code == 400


def make_hub(answers):
    """
    A hub over a fake topology, and a subject whose answer is
    ``answers[0]`` (change it to change the answer).
    """
    clock, topology = Clock(), FakeTopology()
    hub = Hub(topology, clock, heartbeat=5.0, linger=30.0)
    hub.startService()
    subject = hub.subject(("lookup", "x"), lambda: succeed(answers[0]),
                          lambda zone, name: zone == "ams" and name == "web",
                          "instances", "id", lambda: [("ams", "web")])
    return clock, topology, hub, subject


def test_long_poll_times_out_with_the_same_answer_and_wakes_on_a_change():
    """
    A long-poll at the current index returns the same answer after its
    wait; another returns as soon as its answer changes, and not for a
    change of another job.
    """
    answers = [{"instances": [{"id": "a"}]}]
    clock, topology, hub, subject = make_hub(answers)
    index = subject.index
    fired = []
    hub.wait(subject, index, 10.0).addCallback(fired.append)
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.2)
    assert fired == [subject] and subject.index == index

    woke = []
    hub.wait(subject, index, 60.0).addCallback(woke.append)
    answers[0] = {"instances": [{"id": "b"}]}
    topology.change("ams", "api")
    assert woke == []
    topology.change("ams", "web")
    assert woke == [subject] and subject.index != index


def test_streams_get_heartbeats_and_keep_jobs_watched():
    """
    Every few seconds a stream gets a heartbeat comment, and the jobs it
    follows are marked used so their Consul watches are not dropped.
    """
    clock, topology, _, subject = make_hub([{"instances": []}])
    request = StreamRequest()
    stream = Stream(request, subject, limit=1000)
    subject.streams.add(stream)
    clock.advance(5.0)
    assert b": heartbeat\n\n" in request.written
    assert ("ams", "web") in topology.touched


def test_a_slow_client_is_cut_off_with_a_reason():
    """
    While the client's socket is full, events are held up to the limit;
    past it the stream ends with a ``close`` event saying why.
    """
    answers = [{"instances": []}]
    _, topology, _, subject = make_hub(answers)
    request = StreamRequest()
    stream = Stream(request, subject, limit=300)
    subject.streams.add(stream)
    stream.pauseProducing()
    for n in range(10):
        answers[0] = {"instances": [{"id": str(n), "pad": "x" * 50}]}
        topology.change("ams", "web")
    assert stream.closed and request.finished
    assert b"event: close" in request.written[-1]
    assert b"too slowly" in request.written[-1]
    assert stream not in subject.streams


def test_held_events_are_written_when_the_client_reads_again():
    """
    Events held while the client was not reading are written, in order,
    once it reads again.
    """
    answers = [{"instances": []}]
    _, topology, _, subject = make_hub(answers)
    request = StreamRequest()
    stream = Stream(request, subject, limit=10000)
    subject.streams.add(stream)
    stream.pauseProducing()
    answers[0] = {"instances": [{"id": "a"}]}
    topology.change("ams", "web")
    assert request.written == []
    stream.resumeProducing()
    assert b"event: add" in request.written[0]


def test_too_old_last_event_id_gets_a_snapshot():
    """
    Replay is possible only while the missed events are kept: an id older
    than the kept history (or another subject's) gets nothing to replay,
    so the stream starts with a snapshot.
    """
    answers = [{"instances": []}]
    _, topology, hub, subject = make_hub(answers)
    hub.history = 3
    subject.log = type(subject.log)(maxlen=3)
    first = subject.event_id()
    for n in range(5):
        answers[0] = {"instances": [{"id": str(n)}]}
        topology.change("ams", "web")
    assert subject.since(first) is None
    assert subject.since("other-1") is None
    assert len(subject.since(subject.event_id(subject.seq - 1))) == 1
    assert subject.since(subject.event_id()) == []


def test_idle_subjects_are_forgotten_after_lingering():
    """
    A subject nobody follows any more is dropped after the linger time,
    so the hub does not recompute answers for no one.
    """
    clock, _, hub, _ = make_hub([{"instances": []}])
    clock.advance(5.0)
    assert hub.subjects
    for _ in range(10):
        clock.advance(5.0)
    assert hub.subjects == {}
