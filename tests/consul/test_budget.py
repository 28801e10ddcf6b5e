"""
The bound on connections to Consul (:mod:`glimpse.consul._budget`): job
watches can never take the connections that provider writes and the
catalog watches need, and nothing ever holds more than the total.
"""

from glimpse.consul._budget import ConnectionBudget, Use


def test_job_watches_never_starve_writes_and_the_total_is_never_passed():
    """
    With every job slot taken, more job watches wait while writes still
    get the reserved slots; past the total, writes wait too.
    """
    budget = ConnectionBudget(total=4, reserved=2)
    jobs = [budget.acquire(Use.JOBS) for _ in range(3)]
    assert [d.called for d in jobs] == [True, True, False]
    writes = [budget.acquire(Use.CONTROL) for _ in range(3)]
    assert [d.called for d in writes] == [True, True, False]
    assert budget.busy == 4 and budget.waiting == 2


def test_a_freed_slot_goes_to_the_oldest_write_first_then_to_jobs():
    """
    A released slot goes to a waiting write before a waiting job watch; a
    job watch gets one only while fewer than the job slots are held.
    """
    budget = ConnectionBudget(total=3, reserved=1)
    held = [budget.acquire(Use.JOBS), budget.acquire(Use.JOBS), budget.acquire(Use.CONTROL)]
    assert all(d.called for d in held)
    job, write = budget.acquire(Use.JOBS), budget.acquire(Use.CONTROL)
    budget.release(Use.JOBS)
    assert write.called and not job.called
    budget.release(Use.CONTROL)
    assert job.called and budget.in_use == {Use.JOBS: 2, Use.CONTROL: 1}


def test_giving_up_a_wait_leaves_the_queue():
    """
    A request cancelled while it waits for a slot does not take one later.
    """
    budget = ConnectionBudget(total=1, reserved=0)
    budget.acquire(Use.CONTROL)
    waiting = budget.acquire(Use.CONTROL)
    waiting.cancel()
    waiting.addErrback(lambda f: None)
    budget.release(Use.CONTROL)
    assert budget.busy == 0 and budget.waiting == 0
