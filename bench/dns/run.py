#!/usr/bin/env python3
"""
``make bench-dns``: Glimpse's DNS against unbound (local-data), NSD and
stock twisted.names (a zone file) and Consul's own DNS (only_passing), on
the same topology, in one run, with dnsperf on loopback, over UDP and TCP.

Each server is pinned to core 0 and dnsperf to core 1.  Printed per
workload (UDP or TCP; SRV or A; 1 name or 1,000 distinct names): qps, mean
and p99 latency (from dnsperf's per-query lines), server CPU µs per query
(from /proc/<pid>/stat over the run, the server's child processes
included: NSD serves from a child) and each as a ratio to unbound; then the
Consul requests per 1,000 Glimpse queries (from Consul's own metrics), the
provider change -> DNS visibility over 200 changes, and the RSS of a view
of 100,000 instances; and for cached SRV, each target of issues #3 and #14
with its figure.  ``--duration`` sets seconds per run; each saturating run
is repeated (``--repeat``, the servers taking turns) and its medians
printed, with the spread of CPU per query, since one run on a shared
2-core machine can be off by 20%.

Twins of this checkout's Glimpse run beside it, each right before or right
after it in every round (which goes first alternates), and this checkout's
qps and CPU per query are printed as ratios to each, per run and their
medians: ``--baseline-checkout DIR`` adds the Glimpse of another checkout
(say ``git worktree add --detach /tmp/dns-base <commit>``), so that a
change is measured against its parent in one run; ``--unrotated`` adds this
checkout's Glimpse with ``--dns-rotations=1`` (rotation off), so that
rotation's cost is measured.  ``--servers`` runs only some of the servers
(``glimpse`` alone with a twin is the quick comparison).
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.names import dns

from bench.dns import topo
from bench.dns.baseline import start_baseline
from bench.dns.report import report
from bench.dns.topo import CLIENTS, SERVERS, WORKLOADS
from glimpse.dev import find_consul, free_ports, start_dev_consul, start_glimpse

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SERVER_CORE, CLIENT_CORE = "0", "1"
#: Servers whose query files are Glimpse's names (Consul's DNS has its own).
GLIMPSE_NAMES = ("unbound", "nsd", "glimpse", "baseline", "unrotated", "twisted")
#: The Glimpses run next to this checkout's in every round, and compared
#: with it.
TWINS = ("baseline", "unrotated")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_tree(pid):
    """
    A process and all its descendants (NSD serves from a child process).
    """
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(entry)[1]), []).append(int(entry))
            except OSError:
                pass  # gone meanwhile
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid):
    """
    User + system CPU seconds of a process and its descendants, all their
    threads.
    """
    total = 0
    for member in process_tree(pid):
        try:
            fields = _stat(member)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pin(pid, core):
    """
    Pin every thread of a process and of its descendants to one core.
    """
    for member in process_tree(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", core, str(member)], check=True,
                       stdout=subprocess.DEVNULL)


def ask(port, name, qtype, timeout=1.0):
    """
    One UDP query; the decoded response, or ``None`` on timeout.
    """
    m = dns.Message(id=7, recDes=0)
    m.queries = [dns.Query(name, qtype)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(m.toStr(), ("127.0.0.1", port))
        try:
            data = s.recvfrom(65535)[0]
        except TimeoutError:
            return None
    r = dns.Message()
    r.fromStr(data)
    return r


def wait_answers(port, names, qtype, timeout=60.0):
    """
    Wait until every name has an answer (the first lookup of a job waits
    for its watch's first fetch).
    """
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            r = ask(port, name, qtype)
            if r is not None and r.answers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no answer for {name} {qtype} on port {port}")
            time.sleep(0.05)


def dnsperf(port, path, duration, pid, mode="udp", rate=None):
    """
    One dnsperf run against a server: qps, mean latency and server CPU;
    ``mode`` udp or tcp (:data:`bench.dns.topo.CLIENTS` sockets or
    connections); with ``rate``, an offered load of that many qps and
    per-query latencies (``-v``: printing every query slows dnsperf, so not
    in throughput runs).
    """
    cmd = ["taskset", "-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-m", mode, "-d", path, "-l", str(duration), "-c", str(CLIENTS[mode]), "-q", "100"]
    if rate:
        cmd += ["-v", "-Q", str(rate)]
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    codes = re.search(r"Response codes:\s+(.*)", out)
    # "> T name type" is a query that timed out: lost, counted above.
    latencies = sorted(float(line.rsplit(None, 1)[1]) for line in out.splitlines()
                       if line.startswith("> ") and not line.startswith("> T "))
    return {
        "qps": float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1)),
        "completed": completed, "lost": lost, "codes": codes.group(1) if codes else "none",
        "mean_ms": float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1)) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else None,
        "cpu_us": cpu / max(completed, 1) * 1e6,
    }


def medians(runs):
    """
    One result of several runs of the same measurement: the median of each
    figure, the counts summed, and the CPU per query of every run.
    """
    def median(key):
        return sorted(r[key] for r in runs)[len(runs) // 2]

    return {"qps": median("qps"), "mean_ms": median("mean_ms"), "cpu_us": median("cpu_us"),
            "cpu_runs": sorted(r["cpu_us"] for r in runs),
            "completed": sum(r["completed"] for r in runs),
            "lost": sum(r["lost"] for r in runs), "codes": runs[-1]["codes"]}


def consul_requests(agent):
    """
    ``(view, all)``: finished catalog/health requests, and all HTTP API
    requests, from Consul's own metrics.
    """
    with urllib.request.urlopen(f"{agent.url}/v1/agent/metrics?format=prometheus") as r:
        text = r.read().decode()
    counts = re.findall(r'^consul_api_http_count\{method="\w+",path="([^"]*)"\} (\d+)', text, re.M)
    view = sum(int(n) for path, n in counts if path.startswith(("v1_health", "v1_catalog")))
    # Leave out the metrics requests this benchmark makes itself.
    return view, sum(int(n) for path, n in counts if path != "v1_agent_metrics")


def start_servers(work, baseline_checkout=None, unrotated=False, glimpse_args=()):
    """
    Consul (telemetry on, only_passing DNS), Glimpse with the topology,
    unbound, NSD and stock twisted.names, and the twins: with
    ``baseline_checkout`` that checkout's Glimpse, with ``unrotated`` this
    one's with rotation off, each on the same Consul: ``({name: (port,
    pid)}, cleanups, agent, {name: DevGlimpse})``.
    """
    agent = start_dev_consul(find_consul(), "ams", workdir=work, extra_hcl=[
        'telemetry { prometheus_retention_time = "3600s" disable_hostname = true }',
        "dns_config { only_passing = true }"])
    cleanups = [agent.stop]
    glimpse = start_glimpse(agent.url, topo.ZONE, list(glimpse_args), workdir=f"{work}/glimpse")
    cleanups.append(glimpse.stop)
    for provider, state in topo.provider_states():
        status, body = glimpse.put(f"/v1/providers/{provider}", state, timeout=120)
        if status != 200:
            raise SystemExit(f"PUT {provider}: {status} {body}")
    unbound_port, twisted_port, nsd_port = free_ports(3)
    conf = Path(work, "unbound.conf")
    conf.write_text(topo.unbound_conf(unbound_port, work))
    unbound = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    cleanups.append(unbound.kill)
    zone = Path(work, "glimpse.zone")
    zone.write_text(topo.bind_zone())
    nsd_conf = Path(work, "nsd.conf")
    nsd_conf.write_text(topo.nsd_conf(nsd_port, work, zone))
    nsd = subprocess.Popen(["nsd", "-d", "-c", str(nsd_conf)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    # NSD serves from child processes: the whole group goes.
    cleanups.append(lambda: _kill_group(nsd))
    stock = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "--logfile=/dev/null", "dns", "-i", "127.0.0.1", "-p", str(twisted_port),
         f"--bindzone={zone}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cleanups.append(stock.kill)
    glimpses = {"glimpse": glimpse}
    servers = {"glimpse": (glimpse.dns_port, glimpse.process.pid),
               "unbound": (unbound_port, unbound.pid),
               "nsd": (nsd_port, nsd.pid),
               "twisted": (twisted_port, stock.pid),
               "consul": (agent.ports.dns, agent.process.pid)}
    if baseline_checkout is not None:
        baseline = start_baseline(baseline_checkout, agent.url, topo.ZONE, f"{work}/baseline")
        cleanups.append(baseline.stop)
        servers["baseline"] = (baseline.dns_port, baseline.process.pid)
        glimpses["baseline"] = baseline
    if unrotated:
        # It reads the view the first one registered, and registers nothing.
        twin = start_glimpse(agent.url, topo.ZONE, workdir=f"{work}/unrotated",
                             extra_args=[*glimpse_args, "--dns-rotations=1"])
        cleanups.append(twin.stop)
        servers["unrotated"] = (twin.dns_port, twin.process.pid)
        glimpses["unrotated"] = twin
    return servers, cleanups, agent, glimpses


def _kill_group(process):
    try:
        os.killpg(process.pid, 9)
    except ProcessLookupError:
        pass
    process.wait()


def fast_misses(glimpse):
    """
    The fast path's misses so far, from a Glimpse's /metrics.
    """
    with urllib.request.urlopen(f"{glimpse.url}/metrics") as r:
        text = r.read().decode()
    found = re.search(r"^glimpse_dns_fast_misses(?:_total)? ([\d.e+]+)$", text, re.M)
    return int(float(found.group(1))) if found else "?"


def change_visibility(glimpse, changes):
    """
    Seconds from a provider PUT that adds or removes an instance to the
    first DNS answer showing it, over ``changes`` changes.
    """
    name = topo.glimpse_name("http", "flip")
    one = {"product": "shop", "env": "prod", "job": "flip", "instance": "flip-0",
           "address": "10.250.0.1", "ports": {"http": 8080}}
    two = dict(one, instance="flip-1", address="10.250.0.2")
    glimpse.put("/v1/providers/bench-flip", {"instances": [one]})
    wait_answers(glimpse.dns_port, [name], dns.A)
    delays = []
    for i in range(changes):
        want = 2 if i % 2 == 0 else 1
        state = {"instances": [one, two][:want]}
        start = time.monotonic()
        status, body = glimpse.put("/v1/providers/bench-flip", state)
        assert status == 200, body
        while True:
            r = ask(glimpse.dns_port, name, dns.A)
            if r is not None and len(r.answers) == want:
                break
            if time.monotonic() - start > 10:
                raise SystemExit(f"change {i} not visible after 10 s")
            time.sleep(0.001)
        delays.append(time.monotonic() - start)
    delays.sort()
    return delays[len(delays) // 2], delays[int(len(delays) * 0.99)]


def rotation(servers, round_):
    """
    The order the servers take their turns in one round: each twin of this
    checkout's Glimpse (:data:`TWINS`) next to it, the twins right after it
    in even rounds and right before it in odd ones, so that they meet the
    same drift and none always goes first.
    """
    order = [s for s in servers if s not in TWINS]
    twins = [s for s in TWINS if s in servers]
    if twins:
        at = order.index("glimpse") if "glimpse" in order else len(order)
        if round_ % 2 == 0:
            order[at + 1:at + 1] = twins
        else:
            order[at:at] = twins
    return order


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per dnsperf run")
    parser.add_argument("--repeat", type=int, default=5,
                        help="saturating runs per server and workload (medians printed)")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--latency-rate", type=int, default=2000,
                        help="offered qps of the p99 latency runs")
    parser.add_argument("--baseline-checkout", metavar="DIR",
                        help="also run the Glimpse of this checkout (a git worktree of the "
                             "commit to compare with) and print this one's ratios to it")
    parser.add_argument("--unrotated", action="store_true",
                        help="also run this checkout's Glimpse with --dns-rotations=1 "
                             "(rotation off) and print this one's ratios to it")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="the servers to run, comma-separated (default: all of "
                             f"{','.join(SERVERS)}); the twins are added to them")
    parser.add_argument("--modes", default="udp,tcp",
                        help="the transports to measure, comma-separated (udp, tcp)")
    parser.add_argument("--glimpse-args", default="",
                        help="more options for this checkout's Glimpse, space-separated "
                             "(e.g. --glimpse-args=--consul-max-conns=400 to watch every job "
                             "with a blocking query, as before #13)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not chosen or set(chosen) - set(SERVERS):
        parser.error(f"--servers: choose among {','.join(SERVERS)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"udp", "tcp"}:
        parser.error("--modes: choose among udp,tcp")
    workloads = [w for w in WORKLOADS if w[0] in modes]
    if args.baseline_checkout:
        chosen.append("baseline")
    if args.unrotated:
        chosen.append("unrotated")
    work = tempfile.mkdtemp(prefix="glimpse-bench-dns-")
    servers, cleanups, agent, glimpses = start_servers(work, args.baseline_checkout,
                                                       args.unrotated, args.glimpse_args.split())
    glimpse = glimpses["glimpse"]
    try:
        files = topo.query_files(work)
        for name in chosen:
            pin(servers[name][1], SERVER_CORE)
        for _mode, qtype, count in workloads:
            with open(files[("glimpse", qtype, count)]) as f:
                names = [line.split()[0] for line in f]
            for name in chosen:
                if name in GLIMPSE_NAMES:
                    wait_answers(servers[name][0], names, getattr(dns, qtype))
        # Warm every server on every file (Glimpse: the fast path's cache).
        for server in chosen:
            port, pid = servers[server]
            kind = "glimpse" if server in GLIMPSE_NAMES else "consul"
            for mode, qtype, count in workloads:
                dnsperf(port, files[(kind, qtype, count)], 1, pid, mode)
        results, glimpse_queries, view_delta, all_delta, idle_delta = {}, 0, 0, 0, 0
        for mode, qtype, count in workloads:
            runs, glimpse_seconds = {server: [] for server in chosen}, 0.0
            # The servers take turns, run after run: this VM's speed drifts
            # by 20% over minutes, and each server then meets the same drift.
            for round_ in range(args.repeat):
                for server in rotation(chosen, round_):
                    port, pid = servers[server]
                    kind = "glimpse" if server in GLIMPSE_NAMES else "consul"
                    before, started = consul_requests(agent), time.monotonic()
                    runs[server].append(dnsperf(port, files[(kind, qtype, count)], args.duration,
                                                pid, mode))
                    if server == "glimpse":
                        after = consul_requests(agent)
                        glimpse_seconds += time.monotonic() - started
                        view_delta += after[0] - before[0]
                        all_delta += after[1] - before[1]
            for server in chosen:
                port, pid = servers[server]
                kind = "glimpse" if server in GLIMPSE_NAMES else "consul"
                results[(server, mode, qtype, count)] = r = medians(runs[server])
                r["runs"] = runs[server]
                r["p99_ms"] = dnsperf(port, files[(kind, qtype, count)], 2, pid, mode,
                                      rate=args.latency_rate)["p99_ms"]
            if "glimpse" in chosen:
                glimpse_queries += results[("glimpse", mode, qtype, count)]["completed"]
                # As long without queries: what the watches ask anyway (each
                # blocking query ends after its wait).
                idle_before = consul_requests(agent)[0]
                time.sleep(glimpse_seconds)
                idle_delta += consul_requests(agent)[0] - idle_before
        report(results, chosen, workloads)
        print("\nFast-path misses over the whole run (warm-up included; each one a pass "
              "through twisted.names): " + ", ".join(
                  f"{name} {fast_misses(g)}" for name, g in glimpses.items() if name in chosen))
        if "glimpse" in chosen:
            twins = [t for t in TWINS if t in chosen]
            print(f"\nConsul requests per 1,000 Glimpse queries (Consul's own metrics, over the "
                  f"Glimpse runs, {glimpse_queries} queries): catalog+health "
                  f"{view_delta * 1000 / glimpse_queries:.4f}, all HTTP API "
                  f"{all_delta * 1000 / glimpse_queries:.4f} ({view_delta} and {all_delta} "
                  f"requests); catalog+health in as long without any query: {idle_delta} (the "
                  f"250 health watches' blocking queries end every ~60 s whatever the load"
                  + (f"; the watches of {' and '.join(twins)} count in both" if twins else "")
                  + f"); difference per 1,000 queries: "
                  f"{(view_delta - idle_delta) * 1000 / glimpse_queries:.4f}")
            p50, p99 = change_visibility(glimpse, args.changes)
            print(f"Provider change -> visible in Glimpse DNS over {args.changes} changes: "
                  f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms (target p99 < 250 ms)")
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    if "glimpse" in chosen:
        rss = subprocess.run([sys.executable, "-m", "bench.dns.rss"], capture_output=True,
                             text=True, check=True).stdout
        print(rss.strip())


if __name__ == "__main__":
    main()
