"""
The baseline of ``make bench-scale``: a plain blocking-query client, the
way a watch-based tool (consul-template, a hand-written watcher) keeps
many services fresh: one ``GET /v1/health/service/<name>?index=..&wait=..``
per service, each on its own connection, asked again as soon as it
returns.  Not Glimpse's code: Twisted's plain ``Agent`` over a pool as big
as the services.

    python -m bench.scale.blocking_client URL NAMES_FILE [--stale]

Prints ``ready <seconds>`` once every service has its first answer; on
SIGUSR1 ``stats {json}`` (requests sent, answers, errors so far), and the
same on SIGTERM before it stops.
"""

import argparse
import json
import signal
import sys
import time
from urllib.parse import quote

from treq import content
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool


class Client:
    def __init__(self, base, names, stale, wait):
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = len(names) + 10
        pool.retryAutomatically = False
        self.agent = Agent(reactor, pool=pool)
        self.base = base.rstrip("/")
        self.names = names
        self.stale = stale
        self.wait = wait
        self.requests = self.answers = self.errors = 0
        self.first = set()
        self.start = time.monotonic()
        self.ready = None

    def run(self):
        for name in self.names:
            self.ask(name, 0)

    def ask(self, name, index):
        query = f"?index={index}&wait={self.wait}s" if index else "?"
        if self.stale:
            query += "&stale"
        url = f"{self.base}/v1/health/service/{quote(name, safe='')}{query}"
        self.requests += 1
        d: Deferred = self.agent.request(b"GET", url.encode())

        def answered(response):
            new = response.headers.getRawHeaders(b"x-consul-index", [b"0"])[0]
            return content(response).addCallback(lambda _: int(new))

        def done(new):
            self.answers += 1
            if name not in self.first:
                self.first.add(name)
                if len(self.first) == len(self.names):
                    self.ready = time.monotonic() - self.start
                    print(f"ready {self.ready:.3f}", flush=True)
            reactor.callLater(0, self.ask, name, max(1, new) if new >= index else 0)

        def failed(failure):
            self.errors += 1
            reactor.callLater(1.0, self.ask, name, 0)

        d.addCallback(answered).addCallbacks(done, failed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("names", help="a file with one Consul service name a line")
    parser.add_argument("--stale", action="store_true")
    parser.add_argument("--wait", type=int, default=300)
    args = parser.parse_args()
    with open(args.names) as f:
        names = [line.strip() for line in f if line.strip()]
    client = Client(args.url, names, args.stale, args.wait)

    def stats(*_):
        print("stats " + json.dumps({"requests": client.requests, "answers": client.answers,
                                     "errors": client.errors, "ready": client.ready}),
              flush=True)

    def stop(*_):
        stats()
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(stats))
    signal.signal(signal.SIGTERM, stop)
    reactor.callWhenRunning(client.run)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
