#!/usr/bin/env python3
"""
``make bench-fuzz``: 1,000,000 malformed and mutated DNS packets at a
running Glimpse on loopback (real Consul, a small topology), with a normal
query after every 5,000 that must be answered.  Prints the packets sent,
the normal queries answered, and the crashes: the process exiting or a
traceback in its log (both must be 0).
"""

import argparse
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

from twisted.names import dns

from glimpse.dev import find_consul, start_dev_consul, start_glimpse
from glimpse.dns import opt_record
from glimpse.testing import mutate_packet

ZONE = "glimpse.test"
NAME = f"http.web.prod.shop.ams.{ZONE}"


def query(name, qtype, edns=None, id=1):
    """
    An encoded query.
    """
    m = dns.Message(id=id, recDes=1)
    m.queries = [dns.Query(name, qtype)]
    if edns:
        m.additional = [opt_record(edns)]
    return m.toStr()


SEEDS = [query(n, t, e) for n in (NAME, ZONE, f"0a000001.addr.ams.{ZONE}", "example.com")
         for t in (dns.SRV, dns.A, dns.ALL_RECORDS, dns.AXFR) for e in (None, 1232)]


def probe(server, attempts=10):
    """
    Whether a normal query gets its answer (UDP may drop under the flood:
    up to ten tries of half a second).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for attempt in range(attempts):
            s.sendto(query(NAME, dns.A, id=4000 + attempt), server)
            try:
                while True:
                    data = s.recvfrom(65535)[0]
                    r = dns.Message()
                    r.fromStr(data)
                    if r.id == 4000 + attempt:
                        return len(r.answers) == 2
            except TimeoutError:
                continue
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--every", type=int, default=5000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="glimpse-bench-fuzz-")
    rng = random.Random(args.seed)
    with start_dev_consul(find_consul(), "ams", workdir=work) as agent:
        glimpse = start_glimpse(agent.url, ZONE, workdir=f"{work}/glimpse")
        try:
            state = {"instances": [
                {"product": "shop", "env": "prod", "job": "web", "instance": f"web-{i}",
                 "address": f"10.0.0.{i}", "ports": {"http": 8080}} for i in (1, 2)]}
            assert glimpse.put("/v1/providers/fuzz", state)[0] == 200
            deadline = time.monotonic() + 30
            while not probe(glimpse.dns):
                if time.monotonic() > deadline:
                    raise SystemExit("Glimpse never answered the normal query")
            sent, probes, answered = 0, 0, 0
            start = time.monotonic()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
                flood.connect(glimpse.dns)
                while sent < args.packets:
                    for _ in range(args.every):
                        try:
                            flood.send(mutate_packet(rng, rng.choice(SEEDS)))
                        except OSError:
                            pass  # ECONNREFUSED from an earlier packet: it is counted below
                        sent += 1
                    probes += 1
                    answered += probe(glimpse.dns)
                    if glimpse.process.poll() is not None:
                        break
            elapsed = time.monotonic() - start
            alive = glimpse.process.poll() is None
        finally:
            glimpse.stop()
        log = Path(glimpse.log_path).read_text(errors="replace")
    tracebacks = log.count("Traceback")
    print(f"bench-fuzz: {sent} mutated packets in {elapsed:.0f} s ({sent / elapsed:.0f}/s, "
          f"seed {args.seed}); normal queries answered {answered}/{probes}; "
          f"crashes {0 if alive else 1} (process {'alive' if alive else 'DIED'}), "
          f"tracebacks in the log {tracebacks}")
    if not alive or tracebacks or answered != probes:
        sys.exit(1)


if __name__ == "__main__":
    main()
