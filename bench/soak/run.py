"""
``make bench-soak``: Glimpse under the full DNS rate, 1,000 event-stream
subscribers and one Consul change per second, for ``--minutes`` (10), and
whether anything grew without bound.

A dev Consul and Glimpse (``glimpse.dev``) get bench-dns's topology (250
jobs, 1,000 addresses) and ten watched jobs of three instances each,
registered in Consul.  Throughout: dnsperf, unthrottled, on a mix of cached
SRV and A queries for the 1,000 addresses (Glimpse pinned to core 0,
dnsperf to core 1, as bench-dns does); a second dnsperf at a fixed 500 qps
timing every query (the p99 a client sees under that load); the
subscribers on ``/v1/watch/<address>`` of the watched jobs, a few closed
and opened again every second; and one change per second in Consul on a
watched job: a check flipped, or every fifth change an instance
registered or deregistered.

Printed per minute: Glimpse's RSS and open file descriptors at its end
(``/proc/<pid>``), the longest reactor stall of the minute
(``glimpse_reactor_lag_max_seconds``) and how many probes ran more than
50 ms late, the full collections and the longest, DNS qps, lost queries
and p99, and the stream events delivered against those the changes
called for; Glimpse's CPU use and the machine's load average say how much
of a core it had (on a shared machine, stalls and pauses include waiting
for one).  At the end, the slope of RSS and of descriptors over the
minutes after the first, against printed thresholds.

    make bench-soak                         # or: python -m bench.soak.run --minutes 10
    python -m bench.soak.run --minutes 2    # a short one
"""

import argparse
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from twisted.names import dns

from bench.dns import topo
from bench.dns.run import cpu_seconds, pin, wait_answers
from bench.soak.streams import Subscribers
from glimpse.dev.consul import find_consul, start_dev_consul
from glimpse.dev.registrations import deregister, register, service_id, set_check
from glimpse.dev.twistd import start_glimpse

SERVER_CORE, CLIENT_CORE = "0", "1"
WATCHED, PER_JOB = 10, 3
#: Slopes over the minutes after the first above which something grows.
RSS_SLOPE_MB, FDS_SLOPE = 0.5, 0.2


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(glimpse):
    """
    ``{sample: value}`` of /metrics, labels included in the key as written.
    """
    with urllib.request.urlopen(glimpse.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def query_file(work):
    """
    The 1,000 addresses, SRV and A in turn: bench-dns's cached workloads mixed.
    """
    files = topo.query_files(work)
    lines = []
    with open(files[("glimpse", "SRV", 1000)]) as srv, open(files[("glimpse", "A", 1000)]) as a:
        for pair in zip(srv, a, strict=True):
            lines.extend(pair)
    path = Path(work, "mix.txt")
    path.write_text("".join(lines))
    return str(path), [line.split()[0] for line in lines]


def dnsperf(port, path, seconds, rate=None):
    """
    Start one dnsperf run; with ``rate``, at that many qps, every query timed.
    """
    cmd = ["taskset", "-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-d", path, "-l", str(seconds)]
    cmd += ["-c", "1", "-q", "20", "-Q", str(rate), "-v"] if rate else ["-c", "4", "-q", "100"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def dnsperf_result(process):
    out = process.communicate()[0]
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    # "> NOERROR name type latency", or "> T name type" for a lost query.
    latencies = sorted(float(fields[-1]) for line in out.splitlines()
                       if line.startswith("> ") and (fields := line.split())[1] != "T")
    return {"qps": float(qps.group(1)) if qps else 0.0, "lost": int(lost.group(1)) if lost else 0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else None,
            "max_ms": latencies[-1] * 1e3 if latencies else None}


class Changes:
    """
    One Consul change per ``interval`` on the watched jobs, in a thread:
    a check flipped between passing and critical, or every fifth change an
    extra instance registered or deregistered.
    """

    def __init__(self, consul, interval=1.0):
        self._consul = consul
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.made = {}  # address -> changes this minute
        self.errors = 0
        self._critical = set()
        self._extra = set()
        self._thread = threading.Thread(target=self._run, name="changes", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def take(self):
        with self._lock:
            made, self.made = self.made, {}
        return made

    def _change(self, k):
        job = f"soak{k % WATCHED}"
        if k % 5 == 4:
            if job in self._extra:
                deregister(self._consul.url, service_id(job, f"{job}-extra", "http"))
                self._extra.discard(job)
            else:
                register(self._consul.url, job, f"{job}-extra", ip=f"127.40.{k % WATCHED}.99")
                self._extra.add(job)
        else:
            check = f"{service_id(job, f'{job}-{k // WATCHED % PER_JOB}', 'http')}:ttl"
            status = "passing" if check in self._critical else "critical"
            set_check(self._consul.url, check, status)
            (self._critical.discard if status == "passing" else self._critical.add)(check)
        with self._lock:
            address = f"http.{job}.prod.shop.ams"
            self.made[address] = self.made.get(address, 0) + 1

    def _run(self):
        k, due = 0, time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            try:
                self._change(k)
            except (OSError, RuntimeError):
                self.errors += 1
            k += 1
            due += self._interval


def slope(values):
    """
    Least-squares slope of ``values`` per step, or ``None`` for fewer than two.
    """
    n = len(values)
    if n < 2:
        return None
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return (sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
            / sum((x - mean_x) ** 2 for x in range(n)))


def verdict(rows):
    """
    Print whether RSS or descriptors grew over the minutes after the first
    (a slope above its threshold over them all and over their second half).
    """
    after_first = rows[1:]
    print(f"\nGrowth over minutes 2-{len(rows)} (the first warms caches up): thresholds "
          f"RSS {RSS_SLOPE_MB} MB/min, descriptors {FDS_SLOPE}/min, over all those minutes "
          "and over their second half")
    grew = []
    for key, unit, limit in (("rss", "MB", RSS_SLOPE_MB), ("fds", "", FDS_SLOPE)):
        values = [row[key] for row in after_first]
        whole, half = slope(values), slope(values[len(values) // 2:])
        if whole is None or half is None:
            print(f"{key}: too few minutes to tell (run at least 3)")
            continue
        print(f"{key}: {values[0]:.1f} -> {values[-1]:.1f} {unit}; slope {whole:+.3f} {unit}/min, "
              f"second half {half:+.3f} {unit}/min")
        if whole > limit and half > limit:
            grew.append(key)
    if len(after_first) < 3:
        print("Verdict: too short to tell.")
    elif grew:
        print(f"Verdict: GREW without bound: {', '.join(grew)}")
    else:
        print("Verdict: nothing grew without bound.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--reconnects", type=int, default=5,
                        help="streams closed and opened again per second")
    parser.add_argument("--probe-rate", type=int, default=500,
                        help="qps of the dnsperf that times every query")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="glimpse-bench-soak-")
    with start_dev_consul(find_consul(), "ams", workdir=work) as consul:
        glimpse = start_glimpse(consul.url, topo.ZONE, workdir=f"{work}/glimpse")
        try:
            run(args, work, consul, glimpse)
        finally:
            glimpse.stop()


def run(args, work, consul, glimpse):
    for provider, state in topo.provider_states():
        status, body = glimpse.put(f"/v1/providers/{provider}", state, timeout=120)
        if status != 200:
            raise SystemExit(f"PUT {provider}: {status} {body}")
    for j in range(WATCHED):
        for i in range(PER_JOB):
            register(consul.url, f"soak{j}", f"soak{j}-{i}", ip=f"127.40.{j}.{i + 1}")
    addresses = [f"http.soak{j}.prod.shop.ams" for j in range(WATCHED)]
    path, names = query_file(work)
    wait_answers(glimpse.dns_port, names[0::2], dns.SRV)
    wait_answers(glimpse.dns_port, names[1::2], dns.A)
    wait_answers(glimpse.dns_port, [f"{a}.{topo.ZONE}" for a in addresses],
                 dns.A)
    pid = glimpse.process.pid
    pin(pid, SERVER_CORE)
    subscribers = Subscribers(glimpse.http_port, addresses, args.subscribers, args.reconnects)
    deadline = time.monotonic() + 60
    while scrape(glimpse).get("glimpse_subscribers", 0) < args.subscribers:
        if time.monotonic() > deadline:
            raise SystemExit("the subscribers did not all connect")
        time.sleep(0.2)
    subscribers.start()
    changes = Changes(consul)
    print(f"Soak: {args.minutes} min; dnsperf unthrottled (core {CLIENT_CORE}) on "
          f"{len(names)} cached SRV/A queries, a {args.probe_rate} qps dnsperf timing every "
          f"query; {args.subscribers} subscribers on {WATCHED} addresses, {args.reconnects} "
          f"reconnecting per second; 1 Consul change per second; Glimpse pid {pid} on core "
          f"{SERVER_CORE}")
    print(f"{'min':>3} {'RSS MB':>7} {'fds':>5} {'stall ms':>9} {'>50ms':>6} {'full GCs':>8} "
          f"{'GC ms':>6} {'DNS qps':>8} {'lost':>5} {'p99 ms':>7} {'max ms':>7} "
          f"{'events':>14} {'subs':>5} {'chg':>4} {'recon':>5} {'CPU %':>6} {'load':>5}")
    before = scrape(glimpse)
    start = {"rss": rss_mb(pid), "fds": fds(pid)}
    print(f"{'0':>3} {start['rss']:>7.1f} {start['fds']:>5}")
    subscribers.take()
    changes.start()
    rows = []
    try:
        for minute in range(1, args.minutes + 1):
            load = dnsperf(glimpse.dns_port, path, 60)
            probe = dnsperf(glimpse.dns_port, path, 60, rate=args.probe_rate)
            per_address = subscribers.per_address()
            cpu_before = cpu_seconds(pid)
            main_result, probe_result = dnsperf_result(load), dnsperf_result(probe)
            main_result["cpu"] = (cpu_seconds(pid) - cpu_before) / 60 * 100
            made, streams = changes.take(), subscribers.take()
            after = scrape(glimpse)
            rows.append(minute_row(minute, pid, before, after, main_result, probe_result,
                                   made, streams, per_address))
            before = after
    finally:
        changes.stop()
        subscribers.stop()
    if changes.errors:
        print(f"Consul changes that failed: {changes.errors}")
    verdict(rows)


def minute_row(minute, pid, before, after, load, probe, made, streams, per_address):
    """
    Print one minute's line; return its RSS and descriptors.
    """
    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    late = delta("glimpse_reactor_lag_seconds_count") - delta(
        'glimpse_reactor_lag_seconds_bucket{le="0.05"}')
    full = delta('glimpse_gc_pause_seconds_count{generation="2"}')
    # The longest full collection, as the bound of the highest bucket it reached.
    bounds = sorted((float(m.group(1)), name) for name in after
                    if (m := re.match(r'glimpse_gc_pause_seconds_bucket\{generation="2",'
                                      r'le="([^"]+)"\}', name)))
    counted, longest = 0.0, "-"
    for bound, name in bounds:
        if delta(name) > counted:
            counted, longest = delta(name), f"<={bound * 1e3:g}"
        if counted >= full:
            break
    expected = sum(n * per_address.get(address, 0) for address, n in made.items())
    row = {"rss": rss_mb(pid), "fds": fds(pid)}
    stall_ms = after.get("glimpse_reactor_lag_max_seconds", 0) * 1e3
    lost = load["lost"] + probe["lost"]
    events = f"{streams.get('events', 0)}/{expected}"
    print(f"{minute:>3} {row['rss']:>7.1f} {row['fds']:>5} {stall_ms:>9.1f} {late:>6.0f} "
          f"{full:>8.0f} {longest if full else '-':>6} {load['qps']:>8.0f} {lost:>5} "
          f"{probe['p99_ms'] or 0:>7.2f} {probe['max_ms'] or 0:>7.1f} {events:>14} "
          f"{after.get('glimpse_subscribers', 0):>5.0f} {sum(made.values()):>4} "
          f"{streams.get('reconnects', 0):>5} {load['cpu']:>6.0f} {os.getloadavg()[0]:>5.1f}",
          flush=True)
    odd = {k: v for k, v in streams.items() if k == "ended" or
           (k.startswith("status") and k != "status 200")}
    if odd:
        print(f"    streams: {odd}")
    return row


if __name__ == "__main__":
    main()
