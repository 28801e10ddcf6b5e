"""
The fast path's kept answers (UDP's and TCP's): what a change of the view
drops, and the bound on how many are kept.
"""

from glimpse.dns import mmsg
from glimpse.dns.kept import KeptAnswer, KeptAnswers, StreamAnswer

WEB, API = ("ams", "shop--prod--web"), ("ams", "shop--prod--api")
TAIL = (mmsg.tail(b""),)


def _answer(job, rcode=0, owner=True):
    return KeptAnswer(whole_size=0, heads=(b"", b""), tails=[b""], short_heads=(b"", b""),
                      short_tail=b"", qtype=1, rcode=rcode, job=job, zone=job[0],
                      owner=job if owner else None)


ANSWERS = {b"web": _answer(WEB), b"api": _answer(API), b"nope": _answer(WEB, 3, owner=False)}


def _kept(max_entries=100):
    drops = []
    kept = KeptAnswers(max_entries, before_drop=lambda: drops.append(1))
    for key in (b"web", b"api", b"nope"):
        kept.keep(key, ANSWERS[key])
        kept.keep_exact(key + b"!", TAIL, ANSWERS[key], False)
        kept.keep_stream(key + b"?", StreamAnswer(b"\0\0", b"", 0, ANSWERS[key]))
    return kept, drops


def test_a_jobs_change_drops_its_answers_and_the_unowned_ones_only():
    """
    A change of web drops web's answers and the answers no one job makes
    (a negative answer carries the SOA), and keeps api's; the hits are
    counted before.
    """
    kept, drops = _kept()
    kept.changed(*WEB)
    assert sorted(kept.by_key) == [b"api"] and sorted(kept.exact) == [b"api!"]
    assert sorted(kept.stream) == [b"api?"]
    assert drops == [1]
    kept.changed(*WEB)  # nothing of web's left: nothing else goes
    assert sorted(kept.by_key) == [b"api"]


def test_a_catalog_change_drops_everything():
    """
    A change of a zone's catalog (a job added or gone) drops every answer.
    """
    kept, _ = _kept()
    kept.changed("ams", None)
    assert not kept.by_key and not kept.exact and not kept.stream


def test_a_full_map_empties_both_and_a_later_change_still_finds_what_came_after():
    """
    At the bound every map is emptied together (an answer of one map must
    never outlive its entry in the index); what is kept afterwards is still
    dropped by its job's change.
    """
    kept, _ = _kept(max_entries=3)
    kept.keep(b"web2", _answer(WEB))
    assert sorted(kept.by_key) == [b"web2"] and not kept.exact and not kept.stream
    kept.keep_exact(b"web2!", TAIL, ANSWERS[b"web"], False)
    kept.changed(*WEB)
    assert not kept.by_key and not kept.exact


def test_an_exact_answer_kept_again_keeps_its_uncounted_hits():
    """
    The same query bytes kept again (they came through the slow path) add
    their hit to the hits not yet counted.
    """
    kept, _ = _kept()
    kept.exact[b"api!"].hits = 5
    kept.keep_exact(b"api!", TAIL, ANSWERS[b"api"], False)
    assert kept.exact[b"api!"].hits == 6


def test_prune_keeps_what_the_rule_keeps():
    """
    Pruning (a lost zone past max-stale, or recovered) keeps what the rule
    keeps, in every map.
    """
    kept, _ = _kept()
    kept.prune(lambda zone, job, rcode: job == API)
    assert sorted(kept.by_key) == [b"api"] and sorted(kept.exact) == [b"api!"]
    assert sorted(kept.stream) == [b"api?"]
