"""
The runs of ``make bench-scale``, one after another on the same zone so
that the servers' figures belong to one client at a time: Glimpse, a
plain blocking-query client (through an agent with streaming, and one
without), Consul's own DNS.
"""

import collections
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from twisted.names import dns

from bench.scale.probe import (
    ask,
    ask_all,
    glimpse_snapshot,
    http_get,
    rates,
    servers_snapshot,
)
from glimpse.dev.catalog import flip_checks
from glimpse.dev.observe import (
    ConnectionSampler,
    cpu_seconds,
    metric,
    rss_bytes,
    tcp_connections,
)
from glimpse.dev.twistd import start_glimpse

ZONE = "glimpse.test"


def _name(instance):
    return f"http.{instance.job}.prod.shop.ams.{ZONE}"


def _percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Changes:
    """
    ``rate`` check flips a second, each on another job (one of its
    instances goes critical), in a thread; with a DNS server, each flip's
    time until DNS drops the instance.
    """

    def __init__(self, zone, topology, rate, dns_server=None):
        self.zone = zone
        self.rate = rate
        self.dns_server = dns_server
        # Jobs in a fixed random order: the first jobs looked up hold the
        # blocking watches, and changes must fall on polled jobs as often as
        # the jobs are.
        first = [found[0] for found in topology.of_job().values()]
        random.Random(13).shuffle(first)
        self._next = itertools.cycle(first)
        self.flipped = []
        self.latencies = []
        self.unseen = 0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(64)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _server(self):
        # The leader: a write sent to another server is forwarded, an RPC
        # that would be counted against the client under test.
        leader = self.zone.leader()
        return (leader or next(s for s in self.zone.servers if s.running)).url

    def _run(self):
        interval = 1.0 / self.rate
        due = time.monotonic()
        while not self._stop.is_set():
            instance = next(self._next)
            flip_checks(self._server(), [instance], "critical")
            flipped = time.monotonic()
            self.flipped.append(instance)
            if self.dns_server is not None:
                self._pool.submit(self._watch, instance, flipped)
            due += interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _watch(self, instance, flipped):
        deadline = flipped + 30
        while time.monotonic() < deadline:
            rcode, ips = ask(self.dns_server, _name(instance), timeout=2.0)
            if rcode == dns.OK and instance.ip not in ips:
                self.latencies.append(time.monotonic() - flipped)
                return
            time.sleep(0.02)
        self.unseen += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        flip_checks(self._server(), self.flipped, "passing")


def _jobs_known(glimpse):
    try:
        return json.loads(http_get(f"{glimpse.url}/v1/zones/ams")).get("jobs")
    except OSError:
        return None  # 404 or 503 until the zones are known


def _added(rate, before):
    # The gauges as this run added to them: a client agent keeps its
    # streaming views (and their subscriptions) for a while after its
    # client has gone, so an earlier run's are still counted.
    return {**rate, "blocking": rate["blocking"] - before["blocking"],
            "streams": rate["streams"] - before["streams"]}


def _window(seconds, snapshot):
    before = snapshot()
    time.sleep(seconds)
    return before, snapshot()


def topology_phase(zone, topology, workdir):
    """
    ``/v1/topology/ams`` of a Glimpse that has looked nothing up (it must
    read every job, through an agent that has no view of them yet either),
    then again.
    """
    agent = zone.client
    glimpse = start_glimpse(agent.url, ZONE, workdir=os.path.join(workdir, "topology"))
    try:
        while _jobs_known(glimpse) != len(topology.jobs):
            time.sleep(0.05)
        out = {}
        for key in ("cold_s", "warm_s"):
            start = time.monotonic()
            body = json.loads(http_get(f"{glimpse.url}/v1/topology/ams", timeout=120))
            out[key] = time.monotonic() - start
        out["instances"] = body["counts"]["instances"]
        print(f"topology: /v1/topology/ams of {len(topology.jobs)} jobs answered in "
              f"{out['cold_s']:.2f} s by a fresh Glimpse, {out['warm_s'] * 1000:.0f} ms after",
              flush=True)
    finally:
        glimpse.stop()
    _forget_views(zone, agent)
    return out


def glimpse_phase(zone, topology, args, workdir):
    """
    Glimpse on the zone's first client agent: start, every job looked up,
    idle, changes, an outage of every server.
    """
    agent = zone.client
    names = [_name(found[0]) for found in topology.of_job().values()]
    expected = {_name(found[0]): {i.ip for i in found} for found in topology.of_job().values()}
    out = {"before": servers_snapshot(zone)}
    start = time.monotonic()
    glimpse = start_glimpse(agent.url, ZONE, workdir=os.path.join(workdir, "glimpse"))
    try:
        with ConnectionSampler(glimpse.process.pid, agent.ports.http) as conns:
            # Lookups before Glimpse has read the zone's catalog get SERVFAIL
            # (it cannot know the jobs yet): start once it has.
            while _jobs_known(glimpse) != len(names):
                time.sleep(0.05)
            out["catalog_s"] = time.monotonic() - start
            pending = list(names)
            rounds = 0
            while pending and rounds < 5:
                answers = ask_all(glimpse.dns, pending)
                wrong = [(n, a) for n, a in zip(pending, answers, strict=True)
                         if a != (dns.OK, expected[n])]
                if rounds == 0:
                    # What the first lookups of jobs got when not right:
                    # rcodes, "timeout" (no answer: a UDP drop), or "wrong".
                    out["first_round_not_right"] = dict(collections.Counter(
                        str(a[0]) if a[0] != dns.OK else "wrong" for _, a in wrong))
                pending = [n for n, _ in wrong]
                rounds += 1
            out["serving_all_s"] = time.monotonic() - start
            out["not_answered_right"] = len(pending)
            out["lookup_rounds"] = rounds
            out["rss_mb"] = rss_bytes(glimpse.process.pid) / 2**20
            out["servfail"] = metric(http_get(f"{glimpse.url}/metrics"),
                                     "glimpse_dns_responses_total", rcode="SERVFAIL")
            print(f"glimpse: every job answered {out['serving_all_s']:.1f} s after start "
                  f"({len(pending)} not right after {rounds} rounds; first round's: "
                  f"{out['first_round_not_right']}; SERVFAIL sent: {out['servfail']:.0f}), "
                  f"RSS {out['rss_mb']:.0f} MiB", flush=True)

            def both():
                return glimpse_snapshot(glimpse, agent.process.pid), servers_snapshot(zone)

            (g0, s0), (g1, s1) = _window(args.idle, both)
            out["idle"] = {**rates(g0, g1), "servers": _added(rates(s0, s1), out["before"])}
            with Changes(zone, topology, args.rate, glimpse.dns) as changes:
                (g0, s0), (g1, s1) = _window(args.changes, both)
            out["errors_by_endpoint"] = g1["errors_by_endpoint"]
            out["changes"] = {**rates(g0, g1), "servers": rates(s0, s1),
                              "p50_s": _percentile(changes.latencies, 0.5),
                              "p99_s": _percentile(changes.latencies, 0.99),
                              "seen": len(changes.latencies), "unseen": changes.unseen}
            print(f"glimpse: change -> DNS p50 {out['changes']['p50_s'] * 1000:.0f} ms, "
                  f"p99 {out['changes']['p99_s'] * 1000:.0f} ms "
                  f"({len(changes.latencies)} changes)", flush=True)
            out["connections_most"] = conns.most
        if args.outage:
            out["outage"] = _outage(zone, glimpse, agent, names[0], args.outage)
    finally:
        glimpse.stop()
    _forget_views(zone, agent)
    return out


def _outage(zone, glimpse, agent, name, seconds):
    for server in zone.servers:
        server.kill()
    g0 = glimpse_snapshot(glimpse, agent.process.pid)
    time.sleep(seconds)
    g1 = glimpse_snapshot(glimpse, agent.process.pid)
    out = rates(g0, g1)
    t = time.monotonic()
    zone.up(timeout=120)
    while ask(glimpse.dns, name, timeout=2.0)[0] != dns.OK and time.monotonic() - t < 120:
        time.sleep(0.1)
    out["back_s"] = time.monotonic() - t
    print(f"glimpse: {out['requests']:.1f} Consul requests/s while every server was down; "
          f"answering again {out['back_s']:.1f} s after the restart began", flush=True)
    return out


def blocking_phase(zone, agent, topology, names_file, args):
    """
    A plain blocking-query client on ``agent``: a query per job.
    """
    out = {"before": servers_snapshot(zone)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.scale.blocking_client", agent.url, names_file],
        stdout=subprocess.PIPE, text=True)

    def snapshot():
        process.send_signal(signal.SIGUSR1)
        line = process.stdout.readline()
        client = json.loads(line.split(" ", 1)[1])
        return {"t": time.monotonic(), "requests": client["requests"],
                "errors": client["errors"], "cpu": cpu_seconds(process.pid),
                "agent_cpu": cpu_seconds(agent.process.pid)}

    def both():
        return snapshot(), servers_snapshot(zone)

    try:
        line = process.stdout.readline()
        out["serving_all_s"] = float(line.split()[1]) if line.startswith("ready") else None
        out["connections_most"] = tcp_connections(process.pid, agent.ports.http)
        out["rss_mb"] = rss_bytes(process.pid) / 2**20
        (c0, s0), (c1, s1) = _window(args.idle, both)
        out["idle"] = {**rates(c0, c1), "servers": _added(rates(s0, s1), out["before"])}
        with Changes(zone, topology, args.rate):
            (c0, s0), (c1, s1) = _window(args.changes, both)
        out["changes"] = {**rates(c0, c1), "servers": rates(s0, s1)}
        print(f"{'blocking' if agent is zone.clients[1] else 'blocking, no streaming'}: "
              f"first answers {out['serving_all_s']} s, {out['connections_most']} connections",
              flush=True)
    finally:
        process.kill()
        process.wait()
    _forget_views(zone, agent)
    return out


def _forget_views(zone, agent):
    # A client agent keeps the streaming views its client read for a while
    # after: restarted, it drops them, so the next run's subscriptions on
    # the servers are its own.
    agent.terminate()
    zone.up(timeout=120)


def consul_dns_phase(zone, topology):
    """
    Every job looked up once through the client agent's own DNS.
    """
    names = [f"shop--prod--{job}.service.ams.consul" for job in topology.jobs]
    server = zone.client.dns
    s0 = servers_snapshot(zone)
    start = time.monotonic()
    answers = ask_all(server, names)
    elapsed = time.monotonic() - start
    s1 = servers_snapshot(zone)
    ok = sum(1 for rcode, _ in answers if rcode == dns.OK)
    out = {"lookups": len(names), "ok": ok, "elapsed_s": elapsed,
           "rpc_per_lookup": (s1["rpc"] - s0["rpc"]) / len(names),
           "servers": rates(s0, s1)}
    print(f"consul dns: {ok} of {len(names)} answered in {elapsed:.1f} s, "
          f"{out['rpc_per_lookup']:.2f} server RPCs per lookup", flush=True)
    return out

