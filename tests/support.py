"""
Helpers for the tests: blocking DNS queries, waiting on conditions with a
deadline, and the result of a Deferred that has fired.
"""

import socket
import struct
import time

from twisted.names import dns

from glimpse.dns import opt_record


def result_of(d):
    """
    What a Deferred fired with (it must have fired), raising its failure.
    """
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def failure_of(d):
    """
    The exception a Deferred failed with (it must have failed).
    """
    out = []
    d.addBoth(out.append)
    assert out and hasattr(out[0], "value"), f"the Deferred did not fail: {out}"
    return out[0].value


def wait_until(condition, timeout=15.0, interval=0.05, what="the condition"):
    """
    Poll ``condition`` until it returns something true, and return that;
    fail the test with ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def make_query(name, qtype, id=4242, edns=None, rd=True, do=False):
    """
    A query message; with ``edns``, an OPT record advertising that UDP size
    (with the DO bit when ``do``).
    """
    message = dns.Message(id=id, recDes=int(rd))
    message.queries = [dns.Query(name, qtype, dns.IN)]
    if edns is not None:
        message.additional = [opt_record(edns, dnssec_ok=do)]
    return message


def ask(server, name, qtype=dns.SRV, tcp=False, timeout=5.0, **kwargs):
    """
    Send one query to ``server`` (``(host, port)``) and return the decoded
    response :class:`dns.Message`.
    """
    return dns_exchange(server, make_query(name, qtype, **kwargs).toStr(), tcp, timeout)


def dns_exchange(server, payload, tcp=False, timeout=5.0):
    """
    Send raw bytes, return the decoded response.
    """
    message = dns.Message()
    message.fromStr(raw_exchange(server, payload, tcp, timeout))
    return message


def raw_exchange(server, payload, tcp=False, timeout=5.0):
    """
    Send raw bytes, return the raw response bytes.
    """
    if tcp:
        with socket.create_connection(server, timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(payload)) + payload)
            (length,) = struct.unpack("!H", _recv_exactly(s, 2))
            return _recv_exactly(s, length)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, server)
        return s.recvfrom(65535)[0]


def _recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def srv_targets(message):
    """
    ``{(target, port)}`` of the SRV answers of a response.
    """
    return {(r.payload.target.name.decode(), r.payload.port)
            for r in message.answers if r.type == dns.SRV}


def a_addresses(message):
    """
    The A/AAAA addresses of the answer section, as strings.
    """
    return {r.payload.dottedQuad() if r.type == dns.A else
            socket.inet_ntop(socket.AF_INET6, r.payload.address)
            for r in message.answers if r.type in (dns.A, dns.AAAA)}
