"""
Rotation (issue #15, item 5): the order of an answer's records turns from
query to query, so that clients which take the first record (most do, for A,
and many for SRV) do not all send their first request to the same instance.

An answer of ``n`` records has ``r = min(n, rotations)`` orders, where
``rotations`` is ``--dns-rotations`` (1: rotation off).  Order ``k`` starts
at record ``k * n // r`` and goes round; the query's ID picks
``k = ID % r``.  Resolvers pick IDs at random (RFC 5452), so each query gets
one of the orders at random, and the same query (same ID, same view) always
gets the same bytes: twisted.names and the fast path give identical answers,
and the fast path keeps the ``r`` encodings of an answer and picks one with
the ID, with no counter to share and no state that changes per query.

The SRV answer's additional section (its targets' addresses) turns with
it: it starts at the first SRV record's target, so that the addresses keep
the order of the records that name them.  Pure: records in, records out.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.names import dns

#: The default of ``--dns-rotations``: how many orders of one answer at most.
ROTATIONS = 16


def orders(count: int, rotations: int) -> int:
    """
    How many orders an answer of ``count`` records has.

    :param count: the records in its answer section.
    :param rotations: the most orders of one answer (``--dns-rotations``).
    """
    return max(1, min(count, rotations))


def order_of(query_id: int, count: int, rotations: int) -> int:
    """
    The order a query gets (``k``, from 0 to :func:`orders` - 1).

    :param query_id: the query's ID.
    :param count: the records in the answer section.
    :param rotations: the most orders of one answer.
    """
    return query_id % orders(count, rotations)


def rotated(answers: Sequence[dns.RRHeader], additional: Sequence[dns.RRHeader], order: int,
            rotations: int) -> tuple[list[dns.RRHeader], list[dns.RRHeader]]:
    """
    The answer and additional sections in order ``order``.

    :param answers: the answer section in its first order (as the resolver
        gives it: sorted by address).
    :param additional: the additional section (the SRV targets' addresses,
        in the order of the SRV records).
    :param order: ``k``, from :func:`order_of`.
    :param rotations: the most orders of one answer.
    :return: ``(answers, additional)``, new lists.
    """
    start = order * len(answers) // orders(len(answers), rotations)
    turned = [*answers[start:], *answers[:start]]
    extra = list(additional)
    if start and turned[0].type == dns.SRV:
        target = getattr(turned[0].payload, "target", None)
        at = next((i for i, record in enumerate(extra) if record.name == target), 0)
        extra = [*extra[at:], *extra[:at]]
    return turned, extra
