"""
Doubles for the DNS unit tests: a view holding instances in memory (the
same interface :class:`glimpse.view.topology.Topology` offers the DNS), a datagram
transport that records what is sent, and helpers building servers on them.
"""

import itertools
import select
import socket
import struct

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.names import dns

from glimpse.dns import (
    FastDatagramProtocol,
    GlimpseDatagramProtocol,
    GlimpseResolver,
    GlimpseServerFactory,
    StreamFactory,
    ZoneIdentity,
    opt_record,
)
from glimpse.view.model import Check, Instance
from glimpse.view.topology import Unavailable

DNS_ZONE = "glimpse.test"


class _Zone:
    def __init__(self):
        self.tree = {}
        self.jobs = {}

    def ports(self, product, env, job):
        return self.tree.get((product, env, job))


class _Job:
    def __init__(self, instances):
        self.instances = instances


class StubView:
    """
    A view of zones and jobs set by the test; ``problem`` makes a zone
    unavailable (SERVFAIL), ``failing`` makes it report that the local agent
    is out of reach (every zone degraded, as :meth:`Topology.degraded` says
    it).
    """

    def __init__(self):
        self.local_zone = "ams"
        self.zones = {}
        self.serial = 1000
        self.problems = {}
        self.failing = False
        self.touched = []
        self._listeners = []

    def set_job(self, zone, product, env, job, instances, ports=("http",)):
        """
        Put a job with ``instances`` in ``zone`` and tell the listeners.
        """
        view = self.zones.setdefault(zone, _Zone())
        view.tree[(product, env, job)] = frozenset(ports)
        view.jobs[f"{product}--{env}--{job}"] = _Job(tuple(instances))
        self.serial += 1
        for listener in self._listeners:
            listener(zone, f"{product}--{env}--{job}")

    def add_listener(self, listener):
        self._listeners.append(listener)

    def announce(self, zone, name):
        self.serial += 1
        for listener in self._listeners:
            listener(zone, name)

    def cached_instances(self, zone, service):
        job = self.zones[zone].jobs.get(service) if zone in self.zones else None
        return job.instances if job else None

    def zone_problem(self, zone):
        self.zones[zone]  # KeyError: unknown zone
        return self.problems.get(zone)

    def instances(self, zone, service):
        job = self.zones[zone].jobs.get(service)
        if zone in self.problems:
            return fail(Unavailable(self.problems[zone]))
        return succeed(job.instances if job else ())

    def touch(self, zone, service):
        self.touched.append((zone, service))

    def degraded(self):
        return frozenset([None, *self.zones]) if self.failing else frozenset()


class RecordingTransport:
    """
    A datagram transport that keeps every ``(data, address)`` written.
    """

    def __init__(self):
        self.written = []

    def write(self, data, address):
        self.written.append((data, address))


def instance(ip, port=8080, service="http", status="passing", name=None, weights=(1, 1)):
    """
    An instance of shop/prod/web.
    """
    name = name or f"{ip}:{port}"
    check = Check(id=f"{name}:c", name="c", type="tcp", status=status, output="",
                  node_level=False)
    return Instance(id=name, product="shop", env="prod", job="web", instance=name,
                    service=service, provider="p", node="n1", ip=ip, port=port,
                    checks=(check,), weight_passing=weights[0], weight_warning=weights[1])


def demo_view(count=2):
    """
    Zone ``ams`` with shop/prod/web (``count`` healthy instances on ``http``,
    one failing) and shop/prod/db with none healthy.
    """
    view = StubView()
    ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(count)]
    view.set_job("ams", "shop", "prod", "web",
                 [instance(ip) for ip in ips] + [instance("10.9.9.9", status="critical")],
                 ports=("http", "admin"))
    view.set_job("ams", "shop", "prod", "db", [instance("10.8.8.8", status="critical")])
    return view


def servers(view, fast=False, transport=None, steering=None, rotations=16, **fast_options):
    """
    A factory and a UDP protocol (the fast path's when ``fast``, built with
    ``fast_options``) on ``view``, connected to ``transport`` (by default a
    :class:`RecordingTransport`); the resolver follows ``steering`` (a
    :class:`glimpse.view.steering.Steering`) when given.

    :return: ``(factory, protocol, transport, clock)``.
    """
    identity = ZoneIdentity(dns_zone=DNS_ZONE, ns_ip="127.0.0.1", ttl=5, negative_ttl=7)
    factory = GlimpseServerFactory(GlimpseResolver(view, identity, steering),
                                   rotations=rotations)
    clock = Clock()
    proto = (FastDatagramProtocol(factory, view, clock, **fast_options) if fast
             else GlimpseDatagramProtocol(factory))
    transport = transport or RecordingTransport()
    proto.makeConnection(transport)
    return factory, proto, transport, clock


def query_bytes(name, qtype=dns.SRV, id=77, edns=None, rd=True, cls=dns.IN, opcode=dns.OP_QUERY,
                do=False):
    """
    An encoded query; with ``edns``, an OPT record advertising that size
    (with the DO bit when ``do``).
    """
    message = dns.Message(id=id, recDes=int(rd), opCode=opcode)
    message.queries = [dns.Query(name, qtype, cls)]
    if edns is not None:
        message.additional = [opt_record(edns, dnssec_ok=do)]
    return message.toStr()


class QueueSocket:
    """
    A non-blocking UDP socket double: ``recvfrom`` takes the queued
    datagrams, then raises ``BlockingIOError``; ``sendto`` writes to a
    :class:`RecordingTransport` (or raises ``fail_send`` when set).
    """

    def __init__(self, transport, datagrams=()):
        self.transport = transport
        self.queue = list(datagrams)
        self.fail_send = None

    def recvfrom(self, size):
        if not self.queue:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        data, address = self.queue.pop(0)
        return data[:size], address

    def sendto(self, data, address):
        if self.fail_send is not None:
            raise self.fail_send
        self.transport.write(data, address)


class SocketPair:
    """
    Real loopback UDP sockets (port 0) as a fast path's transport: its read
    loop then reads and answers in batches (:mod:`glimpse.dns.mmsg`) as it does
    behind its port, and every answer reaches ``client``.
    """

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.setblocking(False)

    def write(self, data, address):
        self.socket.sendto(data, address)

    def close(self):
        self.socket.close()
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _readable(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


def exchange_socket(proto, pair, data, wait=True):
    """
    Send one datagram from ``pair.client``, let ``proto`` read its socket,
    and return the reply; with ``wait`` false, do not wait for one (a reply
    is then taken only if already there).
    """
    # A reply left over would be one that came after an earlier exchange
    # stopped waiting: a reply where none was expected.
    assert not _readable(pair.client, 0), pair.client.recv(65535)
    pair.client.sendto(data, pair.socket.getsockname())
    assert _readable(pair.socket, 5), "the datagram never arrived"
    proto.read_datagrams(pair.socket)
    if not _readable(pair.client, 5 if wait else 0):
        return None
    return pair.client.recv(65535)


def exchange(proto, transport, data, address=("127.0.0.1", 5353)):
    """
    Feed one datagram and return the raw reply (``None`` when none): through
    the fast path's read loop when ``proto`` has one, as its port does.
    """
    before = len(transport.written)
    if hasattr(proto, "read_datagrams"):
        proto.read_datagrams(QueueSocket(transport, [(data, address)]))
    else:
        proto.datagramReceived(data, address)
    if len(transport.written) == before:
        return None
    assert len(transport.written) == before + 1
    return transport.written[-1][0]


def decode(data):
    """
    Decode a reply into a :class:`dns.Message`, OPT records left in additional.
    """
    message = dns.Message()
    message.fromStr(data)
    return message


def stream_factory(view, fast=True, rotations=16, clock=None, **options):
    """
    A DNS-over-TCP factory on ``view``: with ``fast``, answering from the
    fast path's answers, shared with a UDP fast path (started, so its
    housekeeping runs on ``clock``); ``options`` go to
    :class:`StreamFactory` (``max_conns``, ``idle_timeout``).

    :return: ``(stream_factory, udp_protocol, udp_transport, clock)``.
    """
    factory, udp, wire, udp_clock = servers(view, fast=fast, rotations=rotations)
    clock = clock or udp_clock
    answers = udp.answers if fast else None
    tcp = StreamFactory(factory, clock, answers, **options)
    tcp.doStart()
    return tcp, udp, wire, clock


def connect(tcp):
    """
    A connection of ``tcp`` (a :class:`StreamFactory`) on a
    :class:`StringTransport`: ``(protocol, transport)``.
    """
    protocol = tcp.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def framed(*messages):
    """
    DNS messages with their TCP length prefixes, as one string of bytes.
    """
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def unframed(data):
    """
    The messages in a DNS-over-TCP byte stream (whole ones only).
    """
    messages = []
    while len(data) >= 2:
        (length,) = struct.unpack("!H", data[:2])
        if len(data) < 2 + length:
            break
        messages.append(data[2:2 + length])
        data = data[2 + length:]
    return messages


def exchange_stream(protocol, transport, data):
    """
    Feed one query to a TCP connection and return its one reply (``None``
    when none came).
    """
    transport.clear()
    protocol.dataReceived(framed(data))
    replies = unframed(transport.value())
    assert len(replies) <= 1
    return replies[0] if replies else None


#: The differential tests' corpus: names of every kind, types, EDNS sizes.
NAMES = [
    b"http.web.prod.shop.ams.glimpse.test", b"HTTP.Web.PROD.shop.AMS.glimpse.TEST",
    b"admin.web.prod.shop.ams.glimpse.test",
    b"http.db.prod.shop.ams.glimpse.test", b"web.prod.shop.ams.glimpse.test",
    b"ams.glimpse.test", b"glimpse.test", b"GLIMPSE.test", b"ns.glimpse.test",
    b"0a000001.addr.ams.glimpse.test", b"0a000001.ADDR.ams.glimpse.test",
    b"nope.web.prod.shop.ams.glimpse.test", b"x.y.z.q.w.e.r.glimpse.test",
    b"example.com", b"glimpse.test.example.com",
]
TYPES = [dns.SRV, dns.A, dns.AAAA, dns.TXT, dns.SOA, dns.NS, dns.ALL_RECORDS, 65, 97]
SIZES = [None, 0, 512, 600, 1232, 4096, 65535]


def corpus():
    """
    Every name in every type, with and without EDNS at several sizes (with
    and without the DO bit), with and without RD.
    """
    for i, (name, qtype, size, rd, do) in enumerate(
            itertools.product(NAMES, TYPES, SIZES, (True, False), (False, True))):
        if size is not None or not do:
            yield query_bytes(name, qtype, id=i % 65536, edns=size, rd=rd, do=do)
