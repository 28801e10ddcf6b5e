"""
The fast path's kept answers: what a change of the view drops, and the
bound on how many are kept.
"""

from glimpse.dns.kept import KeptAnswers

WEB, API = ("ams", "shop--prod--web"), ("ams", "shop--prod--api")


def _entry(job, rcode=0, owner=True):
    # (whole_size, heads, tail, short_heads, short_tail, stat_key, job, zone, owner)
    return (0, None, b"", None, b"", (1, rcode), job, job[0], job if owner else None)


def _kept(max_entries=100):
    drops = []
    kept = KeptAnswers(max_entries, before_drop=lambda: drops.append(1))
    kept.keep(b"web", _entry(WEB))
    kept.keep_exact(b"web!", (b"", 0, 0), (1, 0), WEB, "ams", False, WEB)
    kept.keep(b"api", _entry(API))
    kept.keep_exact(b"api!", (b"", 0, 0), (1, 0), API, "ams", False, API)
    kept.keep(b"nope", _entry(WEB, rcode=3, owner=False))
    kept.keep_exact(b"nope!", (b"", 0, 0), (1, 3), WEB, "ams", False, None)
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
    assert drops == [1]
    kept.changed(*WEB)  # nothing of web's left: nothing else goes
    assert sorted(kept.by_key) == [b"api"]


def test_a_catalog_change_drops_everything():
    """
    A change of a zone's catalog (a job added or gone) drops every answer.
    """
    kept, _ = _kept()
    kept.changed("ams", None)
    assert not kept.by_key and not kept.exact


def test_a_full_map_empties_both_and_a_later_change_still_finds_what_came_after():
    """
    At the bound both maps are emptied together (an answer of one map must
    never outlive its entry in the index); what is kept afterwards is still
    dropped by its job's change.
    """
    kept, _ = _kept(max_entries=3)
    kept.keep(b"web2", _entry(WEB))
    assert sorted(kept.by_key) == [b"web2"] and not kept.exact
    kept.keep_exact(b"web2!", (b"", 0, 0), (1, 0), WEB, "ams", False, WEB)
    kept.changed(*WEB)
    assert not kept.by_key and not kept.exact


def test_an_exact_answer_kept_again_keeps_its_uncounted_hits():
    """
    The same query bytes kept again (they came through the slow path) add
    their hit to the hits not yet counted.
    """
    kept, _ = _kept()
    kept.exact[b"api!"][1] = 5
    kept.keep_exact(b"api!", (b"", 0, 0), (1, 0), API, "ams", False, API)
    assert kept.exact[b"api!"][1] == 6


def test_prune_keeps_what_the_rule_keeps():
    """
    Pruning (a lost zone past max-stale, or recovered) keeps what the rule
    keeps, in both maps.
    """
    kept, _ = _kept()
    kept.prune(lambda zone, job, rcode: job == API)
    assert sorted(kept.by_key) == [b"api"] and sorted(kept.exact) == [b"api!"]
