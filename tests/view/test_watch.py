"""
Tests for :obj:`glimpse.view.watch`: the blocking-query loop that keeps the view
current.
"""

import random

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from glimpse.consul import ConsulUnavailable, Response
from glimpse.view.watch import BlockingWatch, backoff_delay, next_index


class Fetches:
    """
    A fake ``fetch``: records each call and hands back a Deferred the test
    fires, or answers at once when ``instant`` is set.

    :ivar calls: ``(index, wait)`` of each call.
    :ivar pending: the Deferreds not fired yet, oldest first.
    :ivar cancelled: how many Deferreds were cancelled.
    """

    def __init__(self, instant=None):
        self.calls = []
        self.pending = []
        self.cancelled = 0
        self.instant = instant

    def __call__(self, index, wait):
        self.calls.append((index, wait))
        if self.instant is not None:
            return succeed(self.instant(len(self.calls)))
        d = Deferred(self._cancel)
        self.pending.append(d)
        return d

    def _cancel(self, d):
        self.cancelled += 1
        self.pending.remove(d)

    def answer(self, body, index):
        """
        Answer the oldest outstanding fetch.
        """
        self.pending.pop(0).callback(Response(body=body, index=index))

    def error(self, exception):
        """
        Fail the oldest outstanding fetch.
        """
        self.pending.pop(0).errback(exception)


def make_watch(fetch, answers=None, errors=None, **options):
    """
    A :class:`BlockingWatch` on a :class:`Clock`, recording answers and errors.
    """
    clock = Clock()
    answers = [] if answers is None else answers
    errors = [] if errors is None else errors
    options.setdefault("rand", random.Random(0))
    watch = BlockingWatch(clock, fetch, answers.append, errors.append, **options)
    return clock, watch, answers, errors


@pytest.mark.parametrize(("previous", "returned", "expected"), [
    (0, 5, 5),
    (5, 7, 7),
    (7, 7, 7),
    (7, 3, 0),
    (5, None, 0),
    (0, None, 0),
    (0, 0, 1),
])
def test_next_index(previous, returned, expected):
    """
    The next query blocks on the returned index; it starts over without
    blocking when there is no index or it went backwards, and never sends
    an index of 0, which would not block and would spin.
    """
    assert next_index(previous, returned) == expected


def test_first_fetch_then_blocks():
    """
    The first query does not block; each later one blocks on the index of
    the previous answer, with a wait between 3/4 of the configured one and
    all of it, varied so that watches started together do not all end
    together; every answer is reported, equal ones too.
    """
    fetch = Fetches()
    clock, watch, answers, _ = make_watch(fetch, wait=30.0, min_interval=0.0)
    watch.start()
    fetch.answer(["a"], 10)
    clock.advance(0)
    fetch.answer(["a"], 10)
    clock.advance(0)
    assert [index for index, _ in fetch.calls] == [None, 10, 10]
    waits = [wait for _, wait in fetch.calls[1:]]
    assert fetch.calls[0][1] is None
    assert all(22.5 <= w <= 30.0 for w in waits) and waits[0] != waits[1]
    assert [a.body for a in answers] == [["a"], ["a"]]
    assert watch.requests == 3


def test_index_backwards_refetches():
    """
    When Consul's index goes backwards (its state was reset), the next
    query is a full, non-blocking one.
    """
    fetch = Fetches()
    clock, watch, _, _ = make_watch(fetch, min_interval=0.0)
    watch.start()
    fetch.answer([], 10)
    clock.advance(0)
    fetch.answer([], 4)
    clock.advance(0)
    assert fetch.calls[-1] == (None, None)


def test_start_twice():
    """
    Starting a running watch does not start a second query.
    """
    fetch = Fetches()
    _, watch, _, _ = make_watch(fetch)
    watch.start()
    watch.start()
    assert len(fetch.calls) == 1
    assert watch.running


def test_rate_limit_instant_answers():
    """
    However fast Consul answers, queries start at most once per
    ``min_interval``.
    """
    fetch = Fetches(instant=lambda n: Response(body=[n], index=n))
    clock, watch, answers, _ = make_watch(fetch, min_interval=0.5, burst=1)
    watch.start()
    # Steps of 1/8 s, exact in binary, so no rounding moves a query.
    for _ in range(80):
        clock.advance(0.125)
    # Ten seconds: the first query and one every half second after it.
    assert len(fetch.calls) == 21
    assert len(answers) == 21


def test_rate_limit_allows_a_short_burst():
    """
    After a quiet spell a few queries may follow each other at once (so the
    second index bump of one change is not held back), and then the rate
    is one per ``min_interval`` again.
    """
    fetch = Fetches(instant=lambda n: Response(body=[n], index=n))
    clock, watch, _answers, _ = make_watch(fetch, min_interval=0.5, burst=3)
    watch.start()
    clock.advance(0)
    clock.advance(0)
    assert len(fetch.calls) == 3
    for _ in range(80):
        clock.advance(0.125)
    # The burst of three, then one every half second for ten seconds.
    assert len(fetch.calls) == 23


def test_rate_limit_waits_rest_of_interval():
    """
    An answer that came back after part of the interval waits only for the
    rest of it; one that took longer than the interval is followed at once.
    """
    fetch = Fetches()
    clock, watch, _, _ = make_watch(fetch, min_interval=1.0, burst=1)
    watch.start()
    clock.advance(0.25)
    fetch.answer([], 1)
    clock.advance(0.74)
    assert len(fetch.calls) == 1
    clock.advance(0.01)
    assert len(fetch.calls) == 2
    clock.advance(5)
    fetch.answer([], 2)
    clock.advance(0)
    assert len(fetch.calls) == 3


def test_backoff_delay_grows_and_is_capped():
    """
    The wait after errors doubles from the base up to the cap, times a
    random factor between 0.5 and 1.5.
    """

    class Fixed:
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value

    middle = [backoff_delay(n, 0.25, 5.0, Fixed(0.5)) for n in range(1, 9)]
    assert middle == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    low = [backoff_delay(n, 0.25, 5.0, Fixed(0.0)) for n in (1, 8)]
    high = [backoff_delay(n, 0.25, 5.0, Fixed(1.0)) for n in (1, 8)]
    assert low == [0.125, 2.5] and high == [0.375, 7.5]


def test_backoff_in_loop():
    """
    After each consecutive error the watch waits the jittered back-off
    (from its seeded random) before asking again, without blocking; one
    success resets the count.
    """
    fetch = Fetches()
    clock, watch, answers, errors = make_watch(
        fetch, rand=random.Random(42), backoff=(1.0, 4.0), min_interval=0.0)
    expected = random.Random(42)
    watch.start()
    fetch.answer([], 7)
    clock.advance(0)
    expected.random()  # the blocking query after the answer drew its wait
    for failures in range(1, 6):
        fetch.error(ConsulUnavailable("health/service", "connection refused"))
        delay = backoff_delay(failures, 1.0, 4.0, expected)
        assert 0.5 <= delay <= 6.0
        clock.advance(delay - 0.001)
        assert len(fetch.pending) == 0
        clock.advance(0.002)  # past the delay, whatever the float rounding
        assert len(fetch.pending) == 1
        assert fetch.calls[-1] == (None, None)
    assert watch.failures == 5
    assert len(errors) == 5
    fetch.answer([], 8)
    assert watch.failures == 0
    assert len(answers) == 2


def test_unexpected_error_retried():
    """
    An error that is not a Consul error is logged and retried like one.
    """
    fetch = Fetches()
    clock, watch, _, errors = make_watch(fetch, backoff=(1.0, 1.0))
    watch.start()
    with capturedLogs() as events:
        fetch.error(ZeroDivisionError())
    assert any(e.get("log_failure") is not None and e["log_failure"].check(ZeroDivisionError)
               for e in events)
    assert isinstance(errors[0], ZeroDivisionError)
    clock.advance(1.5)
    assert len(fetch.calls) == 2


def test_stop_cancels_query():
    """
    Stopping cancels the query in flight; nothing is reported and no
    query starts afterwards.
    """
    fetch = Fetches()
    clock, watch, answers, errors = make_watch(fetch)
    watch.start()
    watch.stop()
    assert fetch.cancelled == 1
    clock.advance(3600)
    assert (len(fetch.calls), answers, errors) == (1, [], [])
    assert not watch.running


def test_stop_while_waiting():
    """
    Stopping between queries (rate limit or back-off) cancels the next one.
    """
    fetch = Fetches()
    clock, watch, _, _ = make_watch(fetch, min_interval=1.0, backoff=(1.0, 1.0))
    watch.start()
    fetch.answer([], 1)
    watch.stop()
    assert clock.getDelayedCalls() == []
    watch.start()
    fetch.error(ConsulUnavailable("catalog/services", "refused"))
    watch.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert len(fetch.calls) == 2


def test_on_answer_exception_keeps_loop():
    """
    A failing answer handler is logged and the watch keeps querying.
    """
    fetch = Fetches()
    clock = Clock()

    def broken(response):
        raise RuntimeError("handler bug")

    watch = BlockingWatch(clock, fetch, broken, lambda e: None, min_interval=0.0)
    watch.start()
    with capturedLogs() as events:
        fetch.answer([], 3)
    assert any("the watch goes on" in e.get("log_format", "") for e in events)
    clock.advance(0)
    assert fetch.calls[-1][0] == 3 and 45.0 <= fetch.calls[-1][1] <= 60.0
    assert watch.running


def test_on_error_exception_keeps_loop():
    """
    A failing error handler is logged and the watch still retries.
    """
    fetch = Fetches()
    clock = Clock()

    def broken(error):
        raise RuntimeError("handler bug")

    watch = BlockingWatch(clock, fetch, lambda r: None, broken, backoff=(1.0, 1.0),
                          rand=random.Random(0))
    watch.start()
    with capturedLogs() as events:
        fetch.error(ConsulUnavailable("catalog/services", "refused"))
    assert any("the watch goes on" in e.get("log_format", "") for e in events)
    clock.advance(1.5)
    assert len(fetch.calls) == 2
