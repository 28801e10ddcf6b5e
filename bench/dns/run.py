#!/usr/bin/env python3
"""
``make bench-dns``: Glimpse's DNS against unbound (local-data), stock
twisted.names (a BIND zone in memory) and Consul's own DNS (only_passing),
on the same topology, in one run, with dnsperf on loopback.

Each server is pinned to core 0 and dnsperf to core 1.  Printed per
workload (SRV or A; 1 name or 1,000 distinct names): qps, mean and p99
latency (from dnsperf's per-query lines), server CPU µs per query (from
/proc/<pid>/stat over the run) and each as a ratio to unbound; then the
Consul requests per 1,000 Glimpse queries (from Consul's own metrics), the
provider change -> DNS visibility over 200 changes, and the RSS of a view
of 100,000 instances; and for cached SRV, each target of issue #3 with its
figure.  ``--duration`` sets seconds per run; each saturating run is
repeated (``--repeat``, the servers taking turns) and its medians printed,
with the spread of CPU per query, since one run on a shared 2-core machine
can be off by 20%.

``--baseline-checkout DIR`` adds a Glimpse run from another checkout (say
``git worktree add --detach /tmp/dns-base <commit>``) to the rotation, next
to this checkout's in every round (which goes first alternates), and prints
this checkout's qps and CPU per query as ratios to it, per run and their
medians: a change is measured against its parent in one run.
``--servers`` runs only some of the servers (``glimpse`` alone with a
baseline is the quick comparison).
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
from bench.dns.topo import SERVERS, WORKLOADS
from glimpse.dev import find_consul, free_ports, start_dev_consul, start_glimpse

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SERVER_CORE, CLIENT_CORE = "0", "1"
#: Servers whose query files are Glimpse's names (Consul's DNS has its own).
GLIMPSE_NAMES = ("unbound", "glimpse", "baseline", "twisted")


def cpu_seconds(pid):
    """
    User + system CPU seconds of a process, all its threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid, core):
    """
    Pin every thread of a process to one core.
    """
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True,
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


def dnsperf(port, path, duration, pid, rate=None):
    """
    One dnsperf run against a server: qps, mean latency and server CPU;
    with ``rate``, an offered load of that many qps and per-query latencies
    (``-v``: printing every query slows dnsperf, so not in throughput runs).
    """
    cmd = ["taskset", "-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-d", path, "-l", str(duration), "-c", "4", "-q", "100"]
    if rate:
        cmd += ["-v", "-Q", str(rate)]
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    codes = re.search(r"Response codes:\s+(.*)", out)
    latencies = sorted(float(line.rsplit(None, 1)[1]) for line in out.splitlines()
                       if line.startswith("> "))
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


def start_servers(work, baseline_checkout=None, glimpse_args=()):
    """
    Consul (telemetry on, only_passing DNS), Glimpse with the topology,
    unbound and stock twisted.names, and with ``baseline_checkout`` that
    checkout's Glimpse on the same Consul: ``({name: (port, pid)}, cleanups,
    agent, glimpse)``.
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
    unbound_port, twisted_port = free_ports(2)
    conf = Path(work, "unbound.conf")
    conf.write_text(topo.unbound_conf(unbound_port, work))
    unbound = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    cleanups.append(unbound.kill)
    zone = Path(work, "glimpse.zone")
    zone.write_text(topo.bind_zone())
    stock = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "--logfile=/dev/null", "dns", "-i", "127.0.0.1", "-p", str(twisted_port),
         f"--bindzone={zone}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cleanups.append(stock.kill)
    servers = {"glimpse": (glimpse.dns_port, glimpse.process.pid),
               "unbound": (unbound_port, unbound.pid),
               "twisted": (twisted_port, stock.pid),
               "consul": (agent.ports.dns, agent.process.pid)}
    if baseline_checkout is not None:
        baseline = start_baseline(baseline_checkout, agent.url, topo.ZONE, f"{work}/baseline")
        cleanups.append(baseline.stop)
        servers["baseline"] = (baseline.dns_port, baseline.process.pid)
    return servers, cleanups, agent, glimpse


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
    The order the servers take their turns in one round: the baseline right
    after this checkout's Glimpse in even rounds and right before it in odd
    ones, so that the two meet the same drift and neither always goes first.
    """
    order = [s for s in servers if s != "baseline"]
    if "baseline" in servers:
        at = order.index("glimpse") if "glimpse" in order else len(order)
        order.insert(at + (round_ % 2 == 0), "baseline")
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
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="the servers to run, comma-separated (default: all of "
                             f"{','.join(SERVERS)}); the baseline is added to them")
    parser.add_argument("--glimpse-args", default="",
                        help="more options for this checkout's Glimpse, space-separated "
                             "(e.g. --glimpse-args=--consul-max-conns=400 to watch every job "
                             "with a blocking query, as before #13)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not chosen or set(chosen) - set(SERVERS):
        parser.error(f"--servers: choose among {','.join(SERVERS)}")
    if args.baseline_checkout:
        chosen.append("baseline")
    work = tempfile.mkdtemp(prefix="glimpse-bench-dns-")
    servers, cleanups, agent, glimpse = start_servers(work, args.baseline_checkout,
                                                      args.glimpse_args.split())
    try:
        files = topo.query_files(work)
        for name in chosen:
            pin(servers[name][1], SERVER_CORE)
        for qtype, count in WORKLOADS:
            with open(files[("glimpse", qtype, count)]) as f:
                names = [line.split()[0] for line in f]
            for name in chosen:
                if name in GLIMPSE_NAMES:
                    wait_answers(servers[name][0], names, getattr(dns, qtype))
        # Warm every server on every file (Glimpse: the fast path's cache).
        for server in chosen:
            port, pid = servers[server]
            kind = "glimpse" if server in GLIMPSE_NAMES else "consul"
            for qtype, count in WORKLOADS:
                dnsperf(port, files[(kind, qtype, count)], 1, pid)
        results, glimpse_queries, view_delta, all_delta, idle_delta = {}, 0, 0, 0, 0
        for qtype, count in WORKLOADS:
            runs, glimpse_seconds = {server: [] for server in chosen}, 0.0
            # The servers take turns, run after run: this VM's speed drifts
            # by 20% over minutes, and each server then meets the same drift.
            for round_ in range(args.repeat):
                for server in rotation(chosen, round_):
                    port, pid = servers[server]
                    kind = "glimpse" if server in GLIMPSE_NAMES else "consul"
                    before, started = consul_requests(agent), time.monotonic()
                    runs[server].append(dnsperf(port, files[(kind, qtype, count)], args.duration,
                                                pid))
                    if server == "glimpse":
                        after = consul_requests(agent)
                        glimpse_seconds += time.monotonic() - started
                        view_delta += after[0] - before[0]
                        all_delta += after[1] - before[1]
            for server in chosen:
                port, pid = servers[server]
                kind = "glimpse" if server in GLIMPSE_NAMES else "consul"
                results[(server, qtype, count)] = r = medians(runs[server])
                r["runs"] = runs[server]
                r["p99_ms"] = dnsperf(port, files[(kind, qtype, count)], 2, pid,
                                      rate=args.latency_rate)["p99_ms"]
            if "glimpse" in chosen:
                glimpse_queries += results[("glimpse", qtype, count)]["completed"]
                # As long without queries: what the watches ask anyway (each
                # blocking query ends after its wait).
                idle_before = consul_requests(agent)[0]
                time.sleep(glimpse_seconds)
                idle_delta += consul_requests(agent)[0] - idle_before
        report(results, chosen)
        if "glimpse" in chosen:
            print(f"\nConsul requests per 1,000 Glimpse queries (Consul's own metrics, over the "
                  f"Glimpse runs, {glimpse_queries} queries): catalog+health "
                  f"{view_delta * 1000 / glimpse_queries:.4f}, all HTTP API "
                  f"{all_delta * 1000 / glimpse_queries:.4f} ({view_delta} and {all_delta} "
                  f"requests); catalog+health in as long without any query: {idle_delta} (the "
                  f"250 health watches' blocking queries end every ~60 s whatever the load"
                  + ("; the baseline's watches count in both" if args.baseline_checkout else "")
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
