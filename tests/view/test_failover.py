"""
Tests for :obj:`glimpse.view.failover`: round-trip times from Consul's
coordinates, the order zones are tried in, and which zone answers.
"""

import math

import pytest

from glimpse.view.failover import (
    Decision,
    datacenter_rtts,
    decide,
    distance,
    zones_to_try,
)


def coord(*vec, height=0.0, adjustment=0.0):
    """
    A Serf coordinate, padded to Consul's 8 dimensions.
    """
    return {"Vec": list(vec) + [0.0] * (8 - len(vec)), "Error": 0.1, "Height": height,
            "Adjustment": adjustment}


def dc(name, *coords):
    """
    One entry of /v1/coordinate/datacenters.
    """
    return {"Datacenter": name, "AreaID": "wan",
            "Coordinates": [{"Node": f"s{i}.{name}", "Coord": c} for i, c in enumerate(coords)]}


def test_distance_is_consuls():
    """
    The Euclidean distance plus both heights, plus both adjustments while
    that stays positive; coordinates that cannot be compared are infinitely
    far.
    """
    assert distance(coord(0.003), coord(0.0, 0.004)) == pytest.approx(0.005)
    assert distance(coord(0.0, height=0.001), coord(0.002, height=0.001)) == pytest.approx(0.004)
    assert distance(coord(0.01, adjustment=-0.002), coord(0.0)) == pytest.approx(0.008)
    assert distance(coord(0.001, adjustment=-0.5), coord(0.0)) == pytest.approx(0.001)
    assert math.isinf(distance({"Vec": [0.0]}, coord(0.0)))
    assert math.isinf(distance({}, coord(0.0)))


def test_rtts_are_the_median_over_server_pairs():
    """
    A zone's round-trip time is the median distance over every pair of the
    local zone's and its servers; zones without coordinates are left out.
    """
    body = [dc("ams", coord(0.0)), dc("fra", coord(0.010), coord(0.012), coord(0.050)),
            dc("lon", coord(0.005)), dc("nyc")]
    assert datacenter_rtts("ams", body) == pytest.approx({"fra": 0.012, "lon": 0.005})
    assert datacenter_rtts("sfo", body) == {}


def test_zones_are_tried_nearest_first_unless_an_order_is_given():
    """
    By round-trip time (zones with none yet last, by name), never the local
    zone; --failover-order gives exactly its zones, in its order.
    """
    zones = ["ams", "fra", "lon", "nyc", "sfo"]
    assert zones_to_try("ams", zones, {"fra": 0.012, "lon": 0.005}) == [
        "lon", "fra", "nyc", "sfo"]
    assert zones_to_try("ams", zones, {}, ["sfo", "ams", "fra"]) == ["sfo", "fra"]


WHAT = "http.web.prod.shop"


def test_the_local_zone_answers_while_it_has_enough():
    """
    The local zone answers while it serves at least --failover-min.
    """
    assert decide("ams", ["fra"], {"ams": 2, "fra": 5}, 2, WHAT) == Decision("ams")


def test_the_nearest_zone_with_enough_answers_otherwise():
    """
    With too few locally, the first zone in order that has enough answers,
    and the reason says why, how far, and how many.
    """
    d = decide("ams", ["lon", "fra"], {"ams": 1, "lon": 1, "fra": 3}, 2, WHAT,
               {"lon": 0.005, "fra": 0.0123})
    assert d.zone == "fra" and d.failover.from_zone == "ams"
    assert d.failover.reason == (
        "ams has 1 serving instance of http.web.prod.shop, fewer than --failover-min 2; "
        "fra, the nearest zone that has them (12.3 ms away), has 3")
    d = decide("ams", ["fra"], {"ams": 0, "fra": 1}, 1, WHAT, by_order=True)
    assert "the first zone of --failover-order" in d.failover.reason


def test_a_local_zone_without_the_job_or_without_a_view_fails_over():
    """
    A local zone that lacks the job, or whose view cannot serve, is passed
    over; when no zone can serve at all, nothing answers (SERVFAIL).
    """
    d = decide("ams", ["fra"], {"fra": 2}, 1, WHAT)
    assert d.zone == "fra" and d.failover.reason.startswith("ams has no http.web.prod.shop")
    d = decide("ams", ["fra"], {"ams": "older than max-stale", "fra": 0}, 1, WHAT)
    assert d.zone == "fra" and "cannot serve (older than max-stale)" in d.failover.reason
    assert decide("ams", ["fra"], {"ams": "gone", "fra": "gone too"}, 1, WHAT) is None


def test_when_no_zone_has_enough_the_one_with_most_answers():
    """
    No zone has --failover-min: the zone with the most answers if it has
    more than the local one; else the local zone (NODATA when it has none).
    """
    d = decide("ams", ["fra", "lon"], {"ams": 1, "fra": 2, "lon": 3}, 5, WHAT)
    assert d.zone == "lon" and "no zone has 5: lon has the most, 3" in d.failover.reason
    assert decide("ams", ["fra"], {"ams": 2, "fra": 2}, 5, WHAT) == Decision("ams")
    assert decide("ams", ["fra"], {"ams": 0, "fra": 0}, 1, WHAT) == Decision("ams")
