"""
Helpers of the scale tests: many DNS lookups at once, what they should
answer, a steady load that counts what goes wrong, and a proxy in front of
a real Consul agent that fails one job's reads.
"""

import collections
import http.client
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor

from twisted.names import dns

from glimpse.address import target_name
from glimpse.dev.twistd import http_json

from support import a_addresses, ask, srv_targets

ZONE = "glimpse.test"


def expected_targets(instances, zone="ams"):
    """
    The SRV targets DNS answers for healthy ``instances``
    (:class:`glimpse.dev.catalog.CatalogInstance`).
    """
    return {(target_name(zone, i.ip, ZONE).rstrip("."), i.port) for i in instances}


def lookup(server, name, qtype=dns.SRV, timeout=10.0):
    """
    ``(rcode, SRV targets or A addresses)`` of one query; ``("timeout",
    None)`` when no answer came.
    """
    try:
        message = ask(server, name, qtype, timeout=timeout)
    except OSError:
        return "timeout", None
    return message.rCode, (srv_targets(message) if qtype == dns.SRV else a_addresses(message))


def lookup_all(server, names, threads=100, qtype=dns.SRV, timeout=10.0):
    """
    Look every name up once, ``threads`` at a time, as a busy resolver in
    front of Glimpse would: ``{name: (rcode, answer)}``.
    """
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(names, pool.map(lambda n: lookup(server, n, qtype, timeout), names),
                        strict=True))


class SteadyLoad:
    """
    DNS and HTTP lookups of ``expected`` (``{job: {ip, ...}}``) in two
    threads, one after another, while used as a context manager; every
    answer that is not right is counted by kind, in the current
    :attr:`phase`.

    :ivar counts: ``{(phase, kind): n}``; kinds: ``ok``, ``servfail``,
        ``timeout``, ``wrong`` (DNS), ``http-ok``, ``http-<status>``,
        ``http-wrong``, ``http-timeout``.
    """

    def __init__(self, glimpse, expected, zone="ams"):
        self.glimpse = glimpse
        self.expected = dict(expected)
        self.zone = zone
        self.phase = "steady"
        self.counts = collections.Counter()
        self.bad = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True)
                         for f in (self._dns, self._http)]

    def _note(self, kind, job):
        self.counts[(self.phase, kind)] += 1
        if kind not in ("ok", "http-ok"):
            self.bad.append((self.phase, kind, job))

    def _dns(self):
        jobs = sorted(self.expected)
        n = 0
        while not self._stop.is_set():
            job = jobs[n % len(jobs)]
            n += 1
            rcode, ips = lookup(self.glimpse.dns, f"http.{job}.prod.shop.{self.zone}.{ZONE}",
                                dns.A, timeout=2.0)
            if rcode == "timeout":
                self._note("timeout", job)
            elif rcode != dns.OK:
                self._note("servfail" if rcode == dns.ESERVER else f"rcode-{rcode}", job)
            else:
                self._note("ok" if ips == self.expected[job] else "wrong", job)
            self._stop.wait(0.002)

    def _http(self):
        jobs = sorted(self.expected)
        n = 0
        while not self._stop.is_set():
            job = jobs[n % len(jobs)]
            n += 1
            try:
                status, body = self.glimpse.get(
                    f"/v1/lookup/http.{job}.prod.shop.{self.zone}?healthy=true", timeout=3.0)
            except OSError:
                self._note("http-timeout", job)
                continue
            if status != 200:
                self._note(f"http-{status}", job)
            elif {i["ip"] for i in body["instances"]} != self.expected[job]:
                self._note("http-wrong", job)
            else:
                self._note("http-ok", job)
            self._stop.wait(0.005)

    def of(self, phase):
        """
        ``{kind: n}`` of one phase.
        """
        return {kind: n for (p, kind), n in self.counts.items() if p == phase}

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join()


class FaultProxy:
    """
    An HTTP/1.1 proxy in front of a real Consul agent that answers 500
    (as Consul does for a server-side error) to every read of the paths
    containing one of :attr:`poisoned`, and passes everything else on, one
    upstream connection per client connection (pipelined requests are
    answered in order).  Consul 1.14 has no per-service read failure that
    can be caused on cue (an ACL filters a service out, it never fails
    its read), so the fault is put in front of the agent.

    :ivar url: the proxy's base URL, for ``--consul``.
    :ivar hits: requests per poisoned name.
    """

    def __init__(self, agent_host, agent_port, poisoned=()):
        self.poisoned = set(poisoned)
        self.hits = collections.Counter()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream = None

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward()

            def do_PUT(self):
                self._forward()

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                hit = next((p for p in proxy.poisoned if p in self.path), None)
                if hit is not None:
                    proxy.hits[hit] += 1
                    self._answer(500, [("Content-Type", "text/plain")],
                                 b"rpc error making call: injected fault")
                    return
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(agent_host, agent_port,
                                                               timeout=700)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                self.upstream.request(self.command, self.path, body=data, headers=headers)
                response = self.upstream.getresponse()
                body = response.read()
                self._answer(response.status, [
                    (k, v) for k, v in response.getheaders()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")],
                    body)

            def _answer(self, status, headers, body):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()


def zone_summary(glimpse, zone="ams"):
    """
    ``/v1/zones/<zone>`` of a Glimpse.
    """
    status, body = http_json("GET", f"{glimpse.url}/v1/zones/{zone}")
    assert status == 200, body
    return body
