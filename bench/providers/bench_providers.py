"""
Provider benchmark: time until a provider's PUT is acknowledged (200, which
means the Consul catalog shows the state) for a full state of 50 instances x
3 named ports (150 registrations, from nothing), and for a 1-instance change
within it.  p50/p99 against a real dev Consul agent.

Baseline, side by side in the same run: the same registrations sent
straight to Consul's agent API (one keep-alive connection, one request per
registration, deregistrations for the full case) and then polling the
catalog until it shows them, i.e. what a provider would do by hand to get
the same guarantee.

    make bench-providers        # or: python -m bench.providers.bench_providers --rounds 30
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse

from glimpse.dev.consul import find_consul, start_dev_consul
from glimpse.dev.twistd import start_glimpse
from glimpse.providers.state import registrations, validate_state

INSTANCES = 50


def state(version, changed=None):
    """
    50 instances x 3 named ports; instance ``changed`` carries ``version``.
    """
    return {"instances": [
        {"product": "shop", "env": "prod", "job": "web", "instance": f"web-{n}",
         "address": f"127.3.0.{n + 1}", "ports": {"http": 8080, "admin": 8081, "grpc": 8082},
         "checks": [{"ttl": "1h"}],
         "meta": {"version": version if changed in (None, n) else "base"}}
        for n in range(INSTANCES)]}


class RawConsul:
    """
    The baseline: register straight into the agent over one connection.
    """

    def __init__(self, agent):
        self._conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, timeout=30)
        self._node = agent.get_json("agent/self")["Config"]["NodeName"]

    def _call(self, method, path, body=None):
        self._conn.request(method, "/v1/" + path,
                           body=None if body is None else json.dumps(body))
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return json.loads(data) if data.strip() else None

    def put(self, definitions, remove=()):
        for definition in definitions:
            self._call("PUT", "agent/service/register?replace-existing-checks=true", definition)
        for sid in remove:
            self._call("PUT", f"agent/service/deregister/{urllib.parse.quote(sid, safe='')}")
        want = {d["ID"]: d["Meta"]["glimpse-hash"] for d in definitions}
        query = urllib.parse.quote('Meta["glimpse-provider"] == "raw"')
        while True:
            services = self._call("GET", f"catalog/node-services/{self._node}?filter={query}")
            held = {s["ID"]: s["Meta"]["glimpse-hash"] for s in services["Services"]}
            if all(held.get(k) == v for k, v in want.items()) and not set(remove) & set(held):
                return
            time.sleep(0.001)


def percentiles(samples):
    """
    ``(p50, p99)`` in milliseconds.
    """
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed(call):
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed PUTs per case")
    options = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="glimpse-bench-providers-")
    agent = start_dev_consul(find_consul(), "ams", workdir=work)
    glimpse = start_glimpse(agent.url, workdir=os.path.join(work, "glimpse"))
    raw = RawConsul(agent)
    results = {}
    try:
        def glimpse_put(document, changed=None):
            status, body = glimpse.put("/v1/providers/bench", document, timeout=60)
            assert status == 200, body
            assert changed is None or len(body["changed"]) == changed, body

        raw_full = list(registrations("raw", validate_state(state("v0"))).values())
        full_g, full_r, change_g, change_r = [], [], [], []
        for n in range(options.rounds):
            # Full state from nothing: start each round empty.
            glimpse_put({"instances": []})
            full_g.append(timed(lambda n=n: glimpse_put(state(f"v{n}"))))
            if n:
                raw.put([], remove=[d["ID"] for d in raw_full])
            full_r.append(timed(lambda: raw.put(raw_full)))
        # Untimed: let the agent finish syncing the last full state first.
        glimpse_put(state("warm", changed=0))
        raw.put([regs for sid, regs in registrations(
            "raw", validate_state(state("warm", changed=0))).items() if ":web-0:" in sid])
        for n in range(options.rounds):
            # One instance's meta changes: 3 registrations of 150.
            # web-0 alone changes from round to round (the others stay "base").
            document = state(f"c{n}", changed=0)
            change_g.append(timed(lambda document=document: glimpse_put(document, changed=3)))
            regs = registrations("raw", validate_state(document))
            changed = [regs[s] for s in regs if ":web-0:" in s]
            change_r.append(timed(lambda changed=changed: raw.put(changed)))
        results = {"full 50x3 (150 regs)": (full_g, full_r),
                   "1-instance change (3 regs)": (change_g, change_r)}
    finally:
        glimpse.stop()
        agent.stop()
    print(f"provider acknowledgement, {options.rounds} rounds each, real Consul dev agent")
    print(f"{'case':28} {'glimpse p50':>12} {'p99':>9} {'raw p50':>10} {'p99':>9} "
          f"{'ratio p50':>10}")
    for case, (g, r) in results.items():
        gp50, gp99 = percentiles(g)
        rp50, rp99 = percentiles(r)
        print(f"{case:28} {gp50:10.1f}ms {gp99:7.1f}ms {rp50:8.1f}ms {rp99:7.1f}ms "
              f"{gp50 / rp50:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
