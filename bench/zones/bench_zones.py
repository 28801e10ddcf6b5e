"""
Zone isolation benchmark: the p99 of lookups in one zone (ams) before and
during an outage of another (fra), side by side in the same run.

Starts two WAN-joined dev Consul agents and a Glimpse on each, seeds each
zone through its own Glimpse, then asks the ams Glimpse, one query at a
time over UDP, for an ams name (timed) alone and alternately with a fra
name (the load the outage touches), in half-second blocks, for PHASE
seconds with fra up and PHASE seconds after SIGKILLing fra's server.
During the outage fra's answers go from the stale view to SERVFAIL
(``--max-stale`` is short here); ams's must not change beyond noise.
Prints p50/p99/max of both phases and the ratio.

    make bench-zones            # or: python -m bench.zones.bench_zones --phase 8
"""

import argparse
import os
import socket
import sys
import tempfile
import time

from twisted.names import dns

from glimpse.dev.consul import find_consul, start_dev_consul
from glimpse.dev.twistd import start_glimpse

ZONE = "glimpse.test"


def state(prefix):
    return {"instances": [
        {"product": "shop", "env": "prod", "job": "web", "instance": f"web-{n}",
         "address": f"{prefix}.{n}", "ports": {"http": 8080}} for n in range(1, 4)]}


def query(name, id):
    message = dns.Message(id=id, recDes=0)
    message.queries = [dns.Query(name, dns.SRV, dns.IN)]
    return message.toStr()


def rcode(data):
    return data[3] & 0x0F


def phase(sock, server, seconds, timeout, with_fra=True):
    """
    Alternate ams and fra queries (only ams ones without ``with_fra``) for
    ``seconds``; return the ams latencies (seconds), the fra rcodes, the
    slowest fra answer and the count of unanswered queries.
    """
    ams_q = query(f"http.web.prod.shop.ams.{ZONE}", 1)
    fra_q = query(f"http.web.prod.shop.fra.{ZONE}", 2)
    queries = ((ams_q, "ams"), (fra_q, "fra")) if with_fra else ((ams_q, "ams"),)
    ams, fra_codes, fra_max, lost = [], {}, 0.0, 0
    sock.settimeout(timeout)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for payload, zone in queries:
            start = time.perf_counter()
            sock.sendto(payload, server)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                lost += 1
                continue
            elapsed = time.perf_counter() - start
            if zone == "ams":
                if rcode(data) != 0:
                    raise SystemExit(f"ams answered rcode {rcode(data)} during the run")
                ams.append(elapsed)
            else:
                fra_codes[rcode(data)] = fra_codes.get(rcode(data), 0) + 1
                fra_max = max(fra_max, elapsed)
    return ams, fra_codes, fra_max, lost


def blocks(sock, server, seconds, timeout, block=0.5):
    """
    Alternate blocks of ``block`` seconds with and without fra queries, so
    that both mixes see the same machine noise: ``(mixed, ams_only)``, each
    as :obj:`phase` returns.
    """
    results = {True: ([], {}, 0.0, 0), False: ([], {}, 0.0, 0)}
    end = time.monotonic() + seconds
    with_fra = True
    while time.monotonic() < end:
        ams, codes, slowest, lost = phase(sock, server, block, timeout, with_fra)
        total = results[with_fra]
        for code, n in codes.items():
            total[1][code] = total[1].get(code, 0) + n
        results[with_fra] = (total[0] + ams, total[1], max(total[2], slowest), total[3] + lost)
        with_fra = not with_fra
    return results[True], results[False]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def summary(label, ams, fra_codes, fra_max, lost):
    names = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}
    codes = ", ".join(f"{names.get(c, c)} {n}" for c, n in sorted(fra_codes.items()))
    fra = f"   fra: {codes}; slowest {fra_max * 1e3:.1f}ms" if fra_codes else ""
    print(f"{label:<24} ams: n={len(ams):>6}  p50={percentile(ams, 50) * 1e6:6.0f}us  "
          f"p99={percentile(ams, 99) * 1e6:6.0f}us  max={max(ams) * 1e6:7.0f}us  "
          f"unanswered {lost}{fra}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--max-stale", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds a query may take before it counts as unanswered")
    options = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="glimpse-bench-zones-")
    binary = find_consul()
    agents, glimpses = [], []
    try:
        agents.append(start_dev_consul(binary, "ams", workdir=workdir))
        agents.append(start_dev_consul(binary, "fra", join_wan=agents[0], workdir=workdir))
        args = [f"--max-stale={options.max_stale}"]
        for agent, prefix in zip(agents, ("127.0.50", "127.0.60"), strict=True):
            g = start_glimpse(agent.url, ZONE, args,
                              workdir=os.path.join(workdir, agent.datacenter))
            glimpses.append(g)
            status, body = g.put("/v1/providers/bench", state(prefix))
            if status != 200:
                raise SystemExit(f"seeding {agent.datacenter} failed: {status} {body}")
        g_ams = glimpses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # Warm up: both jobs watched, both answers in the view.
            deadline = time.monotonic() + 30
            while True:
                ams, codes, _, _ = phase(sock, g_ams.dns, 0.2, options.timeout)
                if ams and codes.get(0) and time.monotonic() < deadline:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("fra never answered through ams")
            phase(sock, g_ams.dns, 1.0, options.timeout)
            before = blocks(sock, g_ams.dns, options.phase, options.timeout)
            agents[1].kill()
            during = blocks(sock, g_ams.dns, options.phase, options.timeout)
        print(f"Zone isolation, ams Glimpse over UDP, one query at a time "
              f"(max-stale {options.max_stale:g}s, {options.phase:g}s per phase, "
              "0.5s blocks alternating ams-only and ams+fra queries):")
        for (label, mixed, alone) in (("fra up", *before), ("fra down", *during)):
            summary(f"{label}, ams only", *alone)
            summary(f"{label}, ams + fra", *mixed)
        for i, mix in ((1, "ams only"), (0, "ams + fra")):
            ratio = percentile(during[i][0], 99) / percentile(before[i][0], 99)
            print(f"ams p99 during/before the fra outage, {mix}: {ratio:.2f}x "
                  "(1.00 = unaffected; the machine's noise applies)")
        return 0
    finally:
        for g in glimpses:
            g.stop()
        for agent in agents:
            agent.stop()


if __name__ == "__main__":
    sys.exit(main())
