"""
The soak's event-stream subscribers: many ``GET /v1/watch/<address>``
streams read by one thread, counting the events each brings, with some
closed and opened again every second as clients come and go.

Each subscriber connects from its own loopback address (127.77.x.y, ten
subscribers per address) as a fleet's clients would, rather than all from
127.0.0.1 where a per-client limit would count them as one.
"""

import selectors
import socket
import threading
import time


class Subscriber:
    """
    One stream: its socket and what it has read.
    """

    def __init__(self, number, address, port):
        self.number = number
        self.address = address
        source = f"127.77.{number // 10 // 250}.{number // 10 % 250 + 1}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET /v1/watch/{address} HTTP/1.1\r\nHost: glimpse\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.partial = b""
        self.status = None

    def feed(self, data, counts):
        """
        Count the events in ``data`` (an ``event:`` line each), by kind.
        """
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if self.status is None and line.startswith(b"HTTP/1."):
                self.status = line.split()[1].decode()
                counts["status " + self.status] = counts.get("status " + self.status, 0) + 1
            elif line.startswith(b"event:"):
                kind = "snapshots" if line[6:].strip() == b"snapshot" else "events"
                counts[kind] = counts.get(kind, 0) + 1


class Subscribers:
    """
    ``count`` streams over ``addresses`` (round robin), read by a thread;
    :meth:`take` gives the counts since the last call.

    :param port: Glimpse's HTTP port.
    :param reconnects: streams closed and opened again per second.
    """

    def __init__(self, port, addresses, count, reconnects=0):
        self._port = port
        self._addresses = addresses
        self._reconnects = reconnects
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._counts = {}
        self._subscribers = {}
        self._stop = threading.Event()
        for number in range(count):
            self._open(number)
        self._thread = threading.Thread(target=self._run, name="subscribers", daemon=True)

    def _open(self, number):
        subscriber = Subscriber(number, self._addresses[number % len(self._addresses)],
                                self._port)
        self._subscribers[number] = subscriber
        self._selector.register(subscriber.sock, selectors.EVENT_READ, subscriber)

    def _close(self, subscriber):
        self._selector.unregister(subscriber.sock)
        subscriber.sock.close()
        del self._subscribers[subscriber.number]

    def per_address(self):
        """
        ``{address: subscribers}`` now.
        """
        out = {}
        for subscriber in list(self._subscribers.values()):
            out[subscriber.address] = out.get(subscriber.address, 0) + 1
        return out

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        for subscriber in list(self._subscribers.values()):
            self._close(subscriber)
        self._selector.close()

    def take(self):
        """
        The counts since the last call: ``events`` (add, update, remove),
        ``snapshots``, ``status <code>`` of each response, ``ended`` (a
        stream Glimpse closed, opened again), ``reconnects``.
        """
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def _count(self, key, n=1):
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def _run(self):
        next_turn, turn = time.monotonic() + 1, 0
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                subscriber = key.data
                try:
                    data = subscriber.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._close(subscriber)
                    self._open(subscriber.number)
                    self._count("ended")
                    continue
                counts = {}
                subscriber.feed(data, counts)
                with self._lock:
                    for name, n in counts.items():
                        self._counts[name] = self._counts.get(name, 0) + n
            if self._reconnects and time.monotonic() >= next_turn:
                # Clients come and go: close a few streams, open them anew.
                next_turn += 1
                numbers = sorted(self._subscribers)
                for i in range(self._reconnects):
                    number = numbers[(turn + i) % len(numbers)]
                    self._close(self._subscribers[number])
                    self._open(number)
                turn += self._reconnects
                self._count("reconnects", self._reconnects)
