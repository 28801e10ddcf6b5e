"""
Event streams end to end against a real Consul: what a client following
``/v1/watch/...`` sees, on reconnects, under random churn, and with a
thousand of them on one address.
"""

import random
import re
import selectors
import socket
import urllib.request

import pytest

from glimpse.dev.registrations import deregister, register, service_id, set_check
from glimpse.dev.twistd import start_glimpse

from http_helpers import EventReader, replay_instances
from support import wait_until

ZONE = "glimpse.test"
ADDRESS = "http.feed.prod.shop.ams"


@pytest.fixture(scope="module")
def glimpse(consul, tmp_path_factory):
    """
    A Glimpse over a Consul holding shop/prod/feed with two instances.
    """
    for n in (1, 2):
        register(consul.url, "feed", f"feed-{n}", "http", 8000 + n, f"127.0.9.{n}")
    g = start_glimpse(consul.url, ZONE, workdir=str(tmp_path_factory.mktemp("glimpse")))
    wait_until(lambda: len(g.get(f"/v1/lookup/{ADDRESS}")[1].get("instances", ())) == 2,
               what="both feed instances")
    yield g
    g.stop()


def current(glimpse, address=ADDRESS):
    """
    ``{id: instance}`` of a plain lookup now.
    """
    status, body = glimpse.get(f"/v1/lookup/{address}")
    assert status == 200, body
    return {i["id"]: i for i in body["instances"]}


def metric(glimpse, name, labels=""):
    """
    One sample of /metrics, as a float (0 when absent).
    """
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_stream_sends_snapshot_then_changes_with_ids(consul, glimpse):
    """
    A stream starts with the whole answer, then sends add, update and
    remove events, each with an id, as instances come, change and go.
    """
    reader = EventReader(f"{glimpse.url}/v1/watch/{ADDRESS}")
    try:
        wait_until(lambda: reader.events, what="the snapshot")
        kind, first_id, snapshot = reader.events[0]
        assert kind == "snapshot" and first_id
        assert {i["instance"] for i in snapshot["instances"]} == {"feed-1", "feed-2"}
        check = register(consul.url, "feed", "feed-3", "http", 8003, "127.0.9.3")
        wait_until(lambda: any(k == "add" for k, _, _ in reader.events), what="the add")
        set_check(consul.url, check, "critical", note="down")
        wait_until(lambda: any(k == "update" and d["status"] == "critical"
                               for k, _, d in reader.events), what="the update")
        deregister(consul.url, service_id("feed", "feed-3", "http"))
        wait_until(lambda: any(k == "remove" for k, _, _ in reader.events), what="the remove")
        ids = [i for _, i, _ in reader.events]
        assert len(set(ids)) == len(ids) and all(ids)
        assert replay_instances(reader.events) == current(glimpse)
    finally:
        reader.close()


def test_a_stream_on_an_address_yet_to_exist_gets_it_when_it_appears(consul, glimpse):
    """
    A deploy can follow its new job before it is registered: the stream
    says the address does not exist (an unavailable event, status 404,
    saying why), stays open, and sends the snapshot when it appears.
    """
    reader = EventReader(f"{glimpse.url}/v1/watch/http.fresh.prod.shop.ams")
    tree = EventReader(f"{glimpse.url}/v1/watch/topology/ams/shop/prod/fresh")
    try:
        wait_until(lambda: reader.events and tree.events, what="the first events")
        kind, _, data = reader.events[0]
        assert kind == "unavailable" and data["status"] == 404
        assert "http.fresh.prod.shop.ams" in data["error"] and data["detail"]
        assert tree.events[0][0] == "unavailable" and tree.events[0][2]["status"] == 404
        register(consul.url, "fresh", "fresh-1", "http", 8100, "127.0.9.100")
        wait_until(lambda: any(k == "snapshot" for k, _, _ in reader.events)
                   and any(k == "snapshot" for k, _, _ in tree.events),
                   what="the snapshots once the job exists")
        kind, _, snapshot = reader.events[-1]
        assert kind == "snapshot"
        assert [i["instance"] for i in snapshot["instances"]] == ["fresh-1"]
    finally:
        reader.close()
        tree.close()
        deregister(consul.url, service_id("fresh", "fresh-1", "http"))


def test_reconnect_with_last_event_id_gets_only_what_was_missed(consul, glimpse):
    """
    A client reconnecting with Last-Event-ID gets the events it missed and
    no snapshot; with an id Glimpse does not know, a fresh snapshot.
    """
    reader = EventReader(f"{glimpse.url}/v1/watch/{ADDRESS}")
    wait_until(lambda: reader.events, what="the snapshot")
    seen = list(reader.events)
    reader.close()
    check = register(consul.url, "feed", "feed-4", "http", 8004, "127.0.9.4")
    wait_until(lambda: len(current(glimpse)) == 3, what="feed-4 in the view")
    again = EventReader(f"{glimpse.url}/v1/watch/{ADDRESS}", last_event_id=seen[-1][1])
    try:
        wait_until(lambda: again.events, what="the missed event")
        assert [k for k, _, _ in again.events] == ["add"]
        assert again.events[0][2]["instance"] == "feed-4"
        assert replay_instances(seen + again.events) == current(glimpse)
    finally:
        again.close()
    stranger = EventReader(f"{glimpse.url}/v1/watch/{ADDRESS}", last_event_id="0000-1")
    try:
        wait_until(lambda: stranger.events, what="a fresh snapshot")
        assert stranger.events[0][0] == "snapshot"
    finally:
        stranger.close()
        del check
        deregister(consul.url, service_id("feed", "feed-4", "http"))
        wait_until(lambda: len(current(glimpse)) == 2, what="feed-4 gone")


def test_replaying_events_on_the_snapshot_gives_the_current_answer(consul, glimpse):
    """
    Under random registrations, deregistrations and health flips, what a
    stream's reader rebuilds from snapshot and events always ends equal to
    the answer of a plain lookup.
    """
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    reader = EventReader(f"{glimpse.url}/v1/watch/{ADDRESS}")
    healthy_reader = EventReader(f"{glimpse.url}/v1/watch/{ADDRESS}?healthy=true")
    live = {}
    try:
        wait_until(lambda: reader.events and healthy_reader.events, what="the snapshots")
        for step in range(40):
            action = rng.choice(["register", "deregister", "flip", "flip"])
            n = rng.randrange(10, 16)
            name = f"feed-{n}"
            if action == "register" or (action == "flip" and name not in live):
                live[name] = register(consul.url, "feed", name, "http", 8100 + n,
                                      f"127.0.10.{n}", rng.choice(["passing", "critical"]))
            elif action == "deregister" and name in live:
                deregister(consul.url, service_id("feed", name, "http"))
                del live[name]
            elif name in live:
                set_check(consul.url, live[name], rng.choice(["passing", "warning", "critical"]),
                          note=f"step {step}")
        want = 2 + len(live)
        wait_until(lambda: len(current(glimpse)) == want, what=f"{want} instances (seed {seed})")
        wait_until(lambda: replay_instances(reader.events) == current(glimpse),
                   what=f"the replayed stream to equal the lookup (seed {seed})")
        healthy = {k: v for k, v in current(glimpse).items() if v["healthy"]}
        wait_until(lambda: replay_instances(healthy_reader.events) == healthy,
                   what=f"the replayed healthy stream to equal the lookup (seed {seed})")
        assert {k for k, _, _ in reader.events} <= {"snapshot", "add", "remove", "update"}
    finally:
        reader.close()
        healthy_reader.close()
        for name in live:
            deregister(consul.url, service_id("feed", name, "http"))
        wait_until(lambda: len(current(glimpse)) == 2, what="the random instances gone")


def test_topology_stream_follows_counts(consul, glimpse):
    """
    /v1/watch/topology/... streams the children of a topology path and
    updates a child when its counts change.
    """
    reader = EventReader(f"{glimpse.url}/v1/watch/topology/ams/shop/prod")
    try:
        wait_until(lambda: reader.events, what="the snapshot")
        kind, _, snapshot = reader.events[0]
        assert kind == "snapshot"
        feed = next(c for c in snapshot["children"] if c["name"] == "feed")
        assert feed["passing"] == 2
        check = register(consul.url, "feed", "feed-5", "http", 8005, "127.0.9.5", "critical")
        wait_until(lambda: any(k == "update" and d["name"] == "feed" and d["critical"] == 1
                               for k, _, d in reader.events), what="the feed counts to change")
        del check
    finally:
        reader.close()
        deregister(consul.url, service_id("feed", "feed-5", "http"))
        wait_until(lambda: len(current(glimpse)) == 2, what="feed-5 gone")


def test_a_thousand_streams_on_one_address_cost_one_consul_watch(consul, glimpse):
    """
    1,000 clients streaming one address share the one Consul watch of its
    job: the watch count does not move, Consul gets no more health requests
    than one watch makes, and every client gets the change.
    """
    watches = metric(glimpse, "glimpse_watches")
    sel = selectors.DefaultSelector()
    socks = []
    request = (f"GET /v1/watch/{ADDRESS} HTTP/1.1\r\nHost: x\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", glimpse.http_port))
            s.sendall(request)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
            socks.append(s)
        wait_until(lambda: metric(glimpse, "glimpse_subscribers") == 1000, timeout=60,
                   what="1,000 subscribers")
        assert metric(glimpse, "glimpse_watches") == watches
        health_before = metric(glimpse, "glimpse_consul_requests_total",
                               '{endpoint="health/service"}')
        register(consul.url, "feed", "feed-6", "http", 8006, "127.0.9.6")
        done = set()

        def drain():
            for key, _ in sel.select(timeout=0.2):
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                key.data.extend(chunk)
                if b'"instance":"feed-6"' in key.data:
                    done.add(key.fileobj)
            return len(done) == 1000

        wait_until(drain, timeout=60, interval=0, what="every stream to get the new instance")
        health_after = metric(glimpse, "glimpse_consul_requests_total",
                              '{endpoint="health/service"}')
        # One watch answers once per change (plus the odd timeout re-ask).
        assert health_after - health_before <= 3
        assert metric(glimpse, "glimpse_watches") == watches
    finally:
        for s in socks:
            s.close()
        deregister(consul.url, service_id("feed", "feed-6", "http"))
        wait_until(lambda: len(current(glimpse)) == 2, what="feed-6 gone")
    wait_until(lambda: metric(glimpse, "glimpse_subscribers") == 0, what="the streams closed")
