"""
The fast path's kept answers of ``any`` names (failover): a change of the
job in any zone drops them, and so does any zone going past max-stale or
recovering.
"""

from twisted.names import dns

from glimpse.dns.kept import KeptAnswer, KeptAnswers, kept_while_degraded

ANY_WEB = ("any", "shop--prod--web")


def _answer(job):
    return KeptAnswer(whole_size=0, heads=(b"", b""), tails=[b""], short_heads=(b"", b""),
                      short_tail=b"", qtype=1, rcode=0, job=job, zone=job[0], owner=job)


def test_a_change_of_the_job_in_any_zone_drops_its_any_answers():
    """
    An ``any`` answer may come from any zone: a change of the job in fra
    (or in ams) drops it; another job's change does not.
    """
    kept = KeptAnswers(100, before_drop=lambda: None)
    kept.keep(b"any", _answer(ANY_WEB))
    kept.changed("fra", "shop--prod--api")
    assert list(kept.by_key) == [b"any"]
    kept.changed("fra", "shop--prod--web")
    assert not kept.by_key


def test_any_answers_go_whenever_a_zone_goes_past_max_stale_or_recovers():
    """
    Failover reads every zone's view: when any zone (or job) crosses
    max-stale or recovers, its answers are recomputed.
    """
    quiet = kept_while_degraded(frozenset(), frozenset(), frozenset())
    assert quiet("any", ANY_WEB, dns.OK)
    assert not kept_while_degraded(frozenset(), frozenset({"fra"}), frozenset())(
        "any", ANY_WEB, dns.OK)
    assert not kept_while_degraded(frozenset({"ams"}), frozenset(), frozenset())(
        "any", ANY_WEB, dns.OK)
    assert not kept_while_degraded(frozenset(), frozenset(), frozenset({("fra", "x")}))(
        "any", ANY_WEB, dns.OK)
