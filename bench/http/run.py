"""
HTTP API benchmark, in one run on loopback:

1. ``GET /v1/lookup/<address>`` on Glimpse, against Consul's own
   ``GET /v1/health/service/<job>?tag=<port>`` for the same instances, and
   against a trivial twisted.web resource serving Glimpse's answer bytes
   (the ceiling of twisted.web on this machine), each with wrk.
2. 1,000 Server-Sent Event subscribers on one address: for each of a
   series of Consul changes (a TTL check's note), the time from Consul
   accepting the change to the last subscriber reading it (p50/p99), and
   the Consul requests Glimpse made meanwhile.

    make bench-http     # or: python -m bench.http.run --duration 10 --subscribers 1000
"""

import argparse
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from glimpse.dev.consul import find_consul, free_ports, start_dev_consul
from glimpse.dev.registrations import register, set_check
from glimpse.dev.twistd import start_glimpse

ADDRESS = "http.web.prod.shop.ams"
TRIVIAL = """
import sys
from twisted.internet import reactor
from twisted.web import resource, server
body = open(sys.argv[2], "rb").read()
class Trivial(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return body
reactor.listenTCP(int(sys.argv[1]), server.Site(Trivial()), interface="127.0.0.1")
reactor.run()
"""


def wrk(url, duration, connections, threads=2):
    """
    Run wrk; returns ``(requests/s, p50 ms, p99 ms, non-2xx)``.
    """
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, pct(50), pct(99), int(bad.group(1)) if bad else 0


def metric(glimpse, name):
    """
    One unlabelled or labelled sample of /metrics.
    """
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def bench_lookups(consul, glimpse, args, workdir):
    with urllib.request.urlopen(f"{glimpse.url}/v1/lookup/{ADDRESS}") as r:
        body = r.read()
    body_path = os.path.join(workdir, "body.json")
    with open(body_path, "wb") as f:
        f.write(body)
    (port,) = free_ports(1)
    trivial = subprocess.Popen([sys.executable, "-c", TRIVIAL, str(port), body_path])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        targets = [
            ("glimpse GET /v1/lookup", f"{glimpse.url}/v1/lookup/{ADDRESS}"),
            ("consul GET /v1/health/service", f"{consul.url}/v1/health/service/"
                                              "shop--prod--web?tag=http"),
            ("twisted.web trivial (ceiling)", f"http://127.0.0.1:{port}/"),
        ]
        consul_before = metric(glimpse, 'glimpse_consul_requests_total{endpoint="health/service"}')
        results = {}
        for name, url in targets:
            wrk(url, 2, args.connections)  # warm-up
            results[name] = wrk(url, args.duration, args.connections)
        consul_after = metric(glimpse, 'glimpse_consul_requests_total{endpoint="health/service"}')
    finally:
        trivial.terminate()
        trivial.wait()
    print(f"\n== GET lookups, {args.instances} instances, {args.duration}s each, "
          f"{args.connections} connections, wrk -t2 (answer: {len(body)} bytes)")
    print(f"{'target':34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, (rps, p50, p99, bad) in results.items():
        print(f"{name:34} {rps:10.0f} {p50:8.2f} {p99:8.2f} {bad:8d}")
    g = results["glimpse GET /v1/lookup"][0]
    print(f"glimpse / consul: {g / results['consul GET /v1/health/service'][0]:.2f}x   "
          f"glimpse / trivial: {g / results['twisted.web trivial (ceiling)'][0]:.2f}x   "
          f"Consul health requests by Glimpse during the wrk runs: "
          f"{consul_after - consul_before:.0f}")


def bench_streams(consul, glimpse, args, check_id):
    sel = selectors.DefaultSelector()
    socks = []
    request = (f"GET /v1/watch/{ADDRESS} HTTP/1.1\r\nHost: x\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    watches_before = metric(glimpse, "glimpse_watches")
    for _ in range(args.subscribers):
        s = socket.create_connection(("127.0.0.1", glimpse.http_port))
        s.sendall(request)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    deadline = time.monotonic() + 60
    while metric(glimpse, "glimpse_subscribers") < args.subscribers:
        if time.monotonic() > deadline:
            raise SystemExit("the subscribers did not all connect")
        time.sleep(0.1)
    health = 'glimpse_consul_requests_total{endpoint="health/service"}'
    consul_before = metric(glimpse, health)
    latencies = []
    for k in range(args.changes):
        marker = f"bench-{k}-{time.monotonic_ns()}".encode()
        for key in sel.get_map().values():
            key.data.clear()
        started = time.monotonic()
        # A status change: Consul syncs output-only changes to the catalog
        # only every check_update_interval (5 minutes).
        set_check(consul.url, check_id, "warning" if k % 2 == 0 else "passing",
                  note=marker.decode())
        accepted = time.monotonic()
        done = set()
        while len(done) < len(socks):
            if time.monotonic() - started > 30:
                raise SystemExit(f"only {len(done)} subscribers saw change {k}")
            for key, _ in sel.select(timeout=1):
                try:
                    key.data.extend(key.fileobj.recv(1 << 16))
                except BlockingIOError:
                    continue
                if key.fileobj not in done and marker in key.data:
                    done.add(key.fileobj)
        latencies.append((time.monotonic() - accepted) * 1000)
    consul_after = metric(glimpse, health)
    watches = metric(glimpse, "glimpse_watches")
    for s in socks:
        s.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"\n== {args.subscribers} SSE subscribers on {ADDRESS}, {args.changes} changes")
    print(f"Consul change -> last subscriber's event: p50 {statistics.median(latencies):.1f} ms, "
          f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
    print(f"Consul health requests by Glimpse for {args.changes} changes: "
          f"{consul_after - consul_before:.0f}; Glimpse's watches: {watches_before:.0f} "
          f"before the subscribers, {watches:.0f} with them")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--instances", type=int, default=10, help="instances of the address")
    parser.add_argument("--subscribers", type=int, default=1000, help="SSE subscribers")
    parser.add_argument("--changes", type=int, default=30, help="Consul changes to time")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    workdir = tempfile.mkdtemp(prefix="glimpse-bench-http-")
    with start_dev_consul(find_consul(), "ams", workdir=workdir) as consul:
        checks = [register(consul.url, "web", f"web-{n}", "http", 8080, f"127.20.0.{n + 1}")
                  for n in range(args.instances)]
        glimpse = start_glimpse(consul.url, "glimpse.test", workdir=workdir)
        try:
            deadline = time.monotonic() + 20
            while True:
                status, body = glimpse.get(f"/v1/lookup/{ADDRESS}")
                if status == 200 and len(body["instances"]) == args.instances:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"Glimpse did not see the instances: {body}")
                time.sleep(0.1)
            print(f"cores: {os.cpu_count()}; Consul {consul.url}, Glimpse {glimpse.url}; "
                  "figures are noisy when the machine is shared")
            bench_lookups(consul, glimpse, args, workdir)
            bench_streams(consul, glimpse, args, checks[0])
        finally:
            glimpse.stop()
    print(json.dumps({"reproduce": "python -m bench.http.run " + " ".join(sys.argv[1:])}))


if __name__ == "__main__":
    main()
