"""
Slow and half-open HTTP clients against one Glimpse with its default
limits (issue #14), on loopback:

1. N connections that each send half a request and then nothing: how long
   opening them takes, how many were answered 429 at once (over
   --http-max-conns-per-client) and how many closed at the header timeout,
   when the last was closed, and Glimpse's open file descriptors before,
   at their peak and after.
2. Clients trickling their request a byte a second: when each is closed.
3. DNS while (1) goes on: the p50/p99 of UDP queries for the zone's SOA,
   before and during.

    python -m bench.http.slow_clients [--half 3000] [--trickle 20]
"""

import argparse
import os
import selectors
import socket
import statistics
import tempfile
import threading
import time

from twisted.names import dns

from glimpse.dev.consul import find_consul, start_dev_consul
from glimpse.dev.twistd import start_glimpse

ZONE = "glimpse.test"


def fds(glimpse):
    return len(os.listdir(f"/proc/{glimpse.process.pid}/fd"))


def dns_latencies(glimpse, seconds):
    query = dns.Message(id=1)
    query.queries = [dns.Query(ZONE, dns.SOA, dns.IN)]
    payload = query.toStr()
    latencies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            s.sendto(payload, glimpse.dns)
            s.recvfrom(4096)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.002)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99)]


def half_requests(glimpse, n):
    sel = selectors.DefaultSelector()
    before = fds(glimpse)
    started = time.monotonic()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", glimpse.http_port), timeout=30)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: gl")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    opened = time.monotonic() - started
    peak, open_left, first_status = fds(glimpse), set(socks), {}
    during = {}
    dns_thread = threading.Thread(target=lambda: during.update(p=dns_latencies(glimpse, 3)))
    dns_thread.start()
    last_closed = None
    while open_left and time.monotonic() - started < 120:
        for key, _ in sel.select(timeout=0.1):
            try:
                chunk = key.fileobj.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                key.data.extend(chunk)
                continue
            sel.unregister(key.fileobj)
            open_left.discard(key.fileobj)
            first_status[key.fileobj] = bytes(key.data[9:12]) or b"reset/none"
            last_closed = time.monotonic() - started
        peak = max(peak, fds(glimpse))
    dns_thread.join()
    while fds(glimpse) > before + 5 and time.monotonic() - started < 120:
        time.sleep(0.05)
    after, freed_at = fds(glimpse), time.monotonic() - started
    counts = {}
    for status in first_status.values():
        counts[status.decode()] = counts.get(status.decode(), 0) + 1
    for s in socks:
        s.close()
    print(f"\n== {n} half-requests from 127.0.0.1 (default limits)")
    print(f"opened in {opened:.2f} s; answers: {counts}; still open: {len(open_left)}")
    last = f"{last_closed:.2f} s" if last_closed is not None else "never"
    print(f"last closed by Glimpse: {last} after the first connect; "
          f"Glimpse's fds: {before} before, {peak} at the peak, {after} after "
          f"(back at {freed_at:.2f} s), while the clients kept their sockets")
    return during.get("p")


def trickle(glimpse, n):
    socks = [socket.create_connection(("127.0.0.1", glimpse.http_port)) for _ in range(n)]
    for s in socks:
        s.setblocking(False)
    started = time.monotonic()
    closed_at = {}
    request = b"GET /v1/status HTTP/1.1\r\nHost: glimpse\r\nX-Slow: " + b"a" * 100
    sent, next_byte = 0, started
    while len(closed_at) < n and time.monotonic() - started < 60:
        for s in socks:
            if s in closed_at:
                continue
            try:
                while s.recv(65536):
                    pass
                closed_at[s] = time.monotonic() - started  # EOF
            except BlockingIOError:
                pass
            except OSError:
                closed_at[s] = time.monotonic() - started
        if time.monotonic() >= next_byte:
            for s in socks:
                if s not in closed_at:
                    try:
                        s.send(request[sent:sent + 1])
                    except OSError:
                        closed_at[s] = time.monotonic() - started
            sent += 1
            next_byte += 1.0
        time.sleep(0.01)
    for s in socks:
        s.close()
    times = sorted(closed_at.values())
    print(f"\n== {n} clients trickling a byte a second")
    if not times:
        print(f"none closed in {time.monotonic() - started:.0f} s, having sent {sent} bytes each")
        return
    print(f"{len(times)} closed {times[0]:.2f}-{times[-1]:.2f} s after connecting, each having "
          f"sent at most {sent} bytes; --http-header-timeout is 5 s by default")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half", type=int, default=3000, help="half-request connections")
    parser.add_argument("--trickle", type=int, default=20, help="trickling clients")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="glimpse-bench-slow-")
    with start_dev_consul(find_consul(), "ams", workdir=workdir) as consul:
        glimpse = start_glimpse(consul.url, ZONE, workdir=workdir)
        try:
            print(f"cores: {os.cpu_count()}; Glimpse {glimpse.url}, DNS {glimpse.dns}")
            quiet = dns_latencies(glimpse, 3)
            during = half_requests(glimpse, args.half)
            print(f"DNS SOA over UDP, p50/p99 ms: {quiet[0]:.3f}/{quiet[1]:.3f} quiet, "
                  f"{during[0]:.3f}/{during[1]:.3f} during the half-requests")
            trickle(glimpse, args.trickle)
        finally:
            glimpse.stop()


if __name__ == "__main__":
    main()
