#!/usr/bin/env python3
"""
``make bench-fuzz``: 1,000,000 malformed and mutated DNS packets at a
running Glimpse on loopback (real Consul, a small topology), with a normal
query after every 5,000 that must be answered; then 200,000 mutated
messages over TCP (some with a mangled length prefix, some bare random
bytes on the stream; a connection the server closes is opened again), with
a normal query over a new connection after every 5,000.  Prints the
packets sent, the normal queries answered, and the crashes: the process
exiting or a traceback in its log (both must be 0).
"""

import argparse
import random
import socket
import struct
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


def tcp_probe(server):
    """
    Whether a normal query over a new TCP connection gets its answer.
    """
    try:
        with socket.create_connection(server, timeout=5) as s:
            data = query(NAME, dns.A, id=4242)
            s.sendall(struct.pack("!H", len(data)) + data)
            head = s.recv(2, socket.MSG_WAITALL)
            (length,) = struct.unpack("!H", head)
            r = dns.Message()
            r.fromStr(s.recv(length, socket.MSG_WAITALL))
            return r.id == 4242 and len(r.answers) == 2
    except (OSError, struct.error, EOFError):
        return False


def tcp_framed(rng, message):
    """
    A mutated message as sent on a DNS-over-TCP stream: mostly with its
    right length prefix, one in 50 with a wrong one (what follows becomes
    its body), one in 50 with none at all.
    """
    kind = rng.randrange(50)
    if kind == 0:
        return struct.pack("!H", rng.randrange(65536)) + message
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 40))
    return struct.pack("!H", len(message)) + message


def _drain(sock):
    # Read (and throw away) the answers already there, without waiting (a
    # socket with a timeout would wait for one); EOF means the server
    # closed the connection.
    sock.settimeout(0)
    try:
        while True:
            if not sock.recv(65536):
                raise ConnectionError("closed by the server")
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)


def tcp_flood(server, rng, messages, every, alive):
    """
    ``messages`` mutated messages over TCP (a connection closed by the
    server is opened again; answers are read and thrown away), a normal
    query after every ``every``: ``(sent, probes, answered, connections)``.
    """
    sent, probes, answered, sock, connections = 0, 0, 0, None, 0
    while sent < messages and alive():
        for _ in range(every):
            try:
                if sock is None:
                    sock = socket.create_connection(server, timeout=5)
                    connections += 1
                sock.sendall(tcp_framed(rng, mutate_packet(rng, rng.choice(SEEDS))))
                _drain(sock)
            except OSError:
                # Closed by the server (a message shorter than a header), or
                # reset: a new connection for the next message.
                if sock is not None:
                    sock.close()
                sock = None
            sent += 1
        probes += 1
        answered += tcp_probe(server)
    if sock is not None:
        sock.close()
    return sent, probes, answered, connections


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--every", type=int, default=5000)
    parser.add_argument("--tcp-messages", type=int, default=200_000)
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
            tcp_start = time.monotonic()
            tcp_sent, tcp_probes, tcp_answered, tcp_connections = tcp_flood(
                glimpse.dns, rng, args.tcp_messages, args.every,
                lambda: glimpse.process.poll() is None)
            tcp_elapsed = time.monotonic() - tcp_start
            alive = glimpse.process.poll() is None
        finally:
            glimpse.stop()
        log = Path(glimpse.log_path).read_text(errors="replace")
    tracebacks = log.count("Traceback")
    print(f"bench-fuzz: {sent} mutated packets in {elapsed:.0f} s ({sent / elapsed:.0f}/s, "
          f"seed {args.seed}); normal queries answered {answered}/{probes}; "
          f"over TCP {tcp_sent} mutated messages on {tcp_connections} connections in "
          f"{tcp_elapsed:.1f} s, normal queries answered {tcp_answered}/{tcp_probes}; "
          f"crashes {0 if alive else 1} (process {'alive' if alive else 'DIED'}), "
          f"tracebacks in the log {tracebacks}")
    if not alive or tracebacks or answered != probes or tcp_answered != tcp_probes:
        sys.exit(1)


if __name__ == "__main__":
    main()
