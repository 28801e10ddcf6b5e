"""
unbound in front of a restarted Glimpse: how long after Glimpse gives a
new answer does the host's unbound give it too?

A real unbound runs the shipped ``etc/unbound/glimpse.conf`` (only its
ports and paths changed) in front of a real Glimpse and Consul.  A client
asks unbound for an address every ``--interval`` seconds throughout, as a
host's programs do.  Each round: the address is answered through unbound;
Glimpse is stopped for ``--outage`` seconds; halfway through, a second
instance is registered in Consul; Glimpse is started again on the same
ports.  Then Glimpse and unbound are asked in turn until each gives the new
answer, and the delay from Glimpse's first new answer to unbound's is
printed, with what unbound answered during the outage (stale answers,
SERVFAILs, and the age of the oldest answer it served, counted from the
last moment Glimpse could have given it).

    make bench-unbound          # or: python -m bench.unbound.recovery --outage 25 --rounds 3
    python -m bench.unbound.recovery --conf my-unbound.conf     # try another file
"""

import argparse
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.names import dns

from glimpse.dev.consul import find_consul, free_ports, start_dev_consul
from glimpse.dev.registrations import register
from glimpse.dev.twistd import REPO, start_glimpse

ZONE = "glimpse.test"
SHIPPED = REPO / "etc" / "unbound" / "glimpse.conf"
UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"


def unbound_config(shipped, port, glimpse_port, workdir, verbosity=0):
    """
    The shipped file with only its port, Glimpse's port and its paths
    changed (foreground, this user, ``workdir``, no chroot, log to stderr).
    """
    text = shipped.read_text()
    text, n_port = re.subn(r"(?m)^(\s*port:\s*)53\s*$", rf"\g<1>{port}", text)
    text, n_stub = re.subn(r"(?m)^(\s*stub-addr:\s*127\.0\.0\.1)@8053\s*$",
                           rf"\g<1>@{glimpse_port}", text)
    if (n_port, n_stub) != (1, 1):
        raise SystemExit(f"{shipped} has no 'port: 53' or no 'stub-addr: 127.0.0.1@8053'")
    return text + f"""
server:
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: {verbosity}
"""


def ask(server, name, timeout=5.0):
    """
    ``(rcode, {addresses})`` of an A query, or ``(None, set())`` when no
    answer came within ``timeout``.
    """
    m = dns.Message(id=int(time.monotonic_ns() % 65536), recDes=1)
    m.queries = [dns.Query(name, dns.A)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(m.toStr(), server)
        try:
            data = s.recvfrom(65535)[0]
        except (TimeoutError, ConnectionRefusedError):
            return None, set()
    r = dns.Message()
    r.fromStr(data)
    return r.rCode, {a.payload.dottedQuad() for a in r.answers if a.type == dns.A}


def wait_for(what, condition, timeout, interval):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def one_round(k, consul, glimpse, server, args):
    """
    One outage and restart; returns the figures of the round.
    """
    job = f"recover{k}"
    name = f"http.{job}.prod.shop.ams.{ZONE}"
    before, after = {"127.30.0.1"}, {"127.30.0.1", "127.30.0.2"}
    register(consul.url, job, "i-1", ip="127.30.0.1")
    wait_for("the first answer through unbound",
             lambda: ask(server, name)[1] == before, 30, args.interval)
    last_fresh = time.monotonic()  # Glimpse answered, and stops after this
    glimpse.stop()
    held = glimpse.hold_ports()
    stopped = time.monotonic()
    outage = args.outage[k % len(args.outage)]
    served = {"stale": 0, "servfail": 0, "none": 0, "other": 0}
    oldest = slowest = 0.0
    registered = False
    while time.monotonic() - stopped < outage:
        if not registered and time.monotonic() - stopped >= outage / 2:
            register(consul.url, job, "i-2", ip="127.30.0.2")
            registered = True
        asked = time.monotonic()
        rcode, addresses = ask(server, name)
        slowest = max(slowest, time.monotonic() - asked)
        if rcode == dns.OK and addresses == before:
            served["stale"] += 1
            oldest = max(oldest, time.monotonic() - last_fresh)
        elif rcode == dns.ESERVER:
            served["servfail"] += 1
        elif rcode is None:
            served["none"] += 1
        else:
            served["other"] += 1
        time.sleep(args.interval)
    for s in held:
        s.close()
    glimpse.start()
    restarted = time.monotonic()
    seen = {}
    deadline = restarted + 120
    while len(seen) < 2:
        now = time.monotonic()
        if now > deadline:
            raise SystemExit(f"round {k}: no new answer within 120 s: {seen}")
        # unbound first: a tie in one polling round counts against it.
        if "unbound" not in seen and ask(server, name)[1] == after:
            seen["unbound"] = time.monotonic()
        if "glimpse" not in seen and ask(glimpse.dns, name)[1] == after:
            seen["glimpse"] = time.monotonic()
        time.sleep(args.interval)
    return {"glimpse": seen["glimpse"] - restarted, "unbound": seen["unbound"] - restarted,
            "delay": max(0.0, seen["unbound"] - seen["glimpse"]), "oldest": oldest,
            "outage": outage, "slowest": slowest, **served}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=lambda v: [float(x) for x in v.split(",")],
                        default=[25.0, 7.3, 61.7],
                        help="seconds Glimpse is down, comma-separated: used in turn")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--interval", type=float, default=0.02,
                        help="seconds between a client's queries")
    parser.add_argument("--ttl", type=int, default=5, help="Glimpse's --dns-ttl")
    parser.add_argument("--conf", type=Path, default=SHIPPED, help="the unbound file to try")
    parser.add_argument("--verbosity", type=int, default=0, help="unbound's, into its log")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glimpse-bench-unbound-"))
    with start_dev_consul(find_consul(), "ams", workdir=str(work)) as consul:
        glimpse = start_glimpse(consul.url, ZONE, workdir=str(work / "glimpse"),
                                extra_args=[f"--dns-ttl={args.ttl}",
                                            f"--negative-ttl={args.ttl}"])
        (port,) = free_ports(1)
        conf = work / "unbound.conf"
        conf.write_text(unbound_config(args.conf, port, glimpse.dns_port, work,
                                        args.verbosity))
        log = open(work / "unbound.log", "wb")  # noqa: SIM115 (closed in finally)
        unbound = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        server = ("127.0.0.1", port)
        try:
            wait_for("unbound to answer", lambda: ask(server, ZONE)[0] is not None, 20, 0.05)
            print(f"unbound {args.conf} in front of Glimpse (--dns-ttl={args.ttl}); a client "
                  f"asks every {args.interval * 1000:.0f} ms (5 s timeout, as glibc's); each "
                  "round Glimpse is down for the outage, a second instance is registered in "
                  "Consul halfway, "
                  "Glimpse restarts; seconds after the restart until each gives the new answer")
            print(f"{'round':>5} {'outage s':>9} {'Glimpse s':>10} {'unbound s':>10} "
                  f"{'delay s':>8} {'stale':>6} {'SERVFAIL':>9} {'no answer':>10} "
                  f"{'oldest served s':>16} {'slowest s':>10}")
            rounds = []
            for k in range(args.rounds):
                r = one_round(k, consul, glimpse, server, args)
                rounds.append(r)
                print(f"{k:>5} {r['outage']:>9.1f} {r['glimpse']:>10.2f} {r['unbound']:>10.2f} "
                      f"{r['delay']:>8.2f} {r['stale']:>6} {r['servfail']:>9} {r['none']:>10} "
                      f"{r['oldest']:>16.1f} {r['slowest']:>10.2f}", flush=True)
            delays = [r["delay"] for r in rounds]
            print(f"unbound's new answer after Glimpse's: median {statistics.median(delays):.2f} s,"
                  f" max {max(delays):.2f} s (target <= 2 s); the oldest answer unbound served "
                  f"was {max(r['oldest'] for r in rounds):.1f} s old; the slowest answer during "
                  f"the outages took {max(r['slowest'] for r in rounds):.2f} s, and "
                  f"{sum(r['none'] for r in rounds)} queries got none")
        finally:
            glimpse.stop()
            unbound.send_signal(signal.SIGTERM)
            unbound.wait(10)
            log.close()
            print(f"unbound's log: {work / 'unbound.log'}")


if __name__ == "__main__":
    main()
