"""
What a DNS name in Glimpse's zone means, and the records that answer it.
Pure: the view is passed in, nothing here does I/O.
"""

import ipaddress

import attrs
from twisted.names import dns

from glimpse.address import TARGET_LABEL, Address, label_problem, parse_target_label, target_name

APEX, ZONE, NODE, ADDRESS, TARGET = "apex", "zone", "node", "address", "target"


@attrs.frozen
class Name:
    """
    A classified name inside the DNS zone.

    :ivar kind: one of ``apex``, ``zone``, ``node`` (an interior node of the
        tree: product, env or job), ``address`` or ``target``.
    :ivar zone: the zone label, for all kinds but the apex.
    :ivar path: for a node, the labels below the zone, outermost first.
    :ivar address: for an address, the :class:`Address`.
    :ivar ip: for a target, the IP it encodes.
    """

    kind: str
    zone: str = None
    path: tuple = ()
    address: Address = None
    ip: str = None


def classify(labels):
    """
    Classify the labels of a name below the DNS zone (outermost first).

    :return: a :class:`Name`, or ``None`` when the name cannot exist in any view
        (too deep, or a label that is not a valid field): NXDOMAIN.
    """
    if not labels:
        return Name(APEX)
    zone, rest = labels[0], tuple(labels[1:])
    if label_problem(zone, "zone"):
        return None
    if len(rest) == 2 and rest[0] == TARGET_LABEL:
        ip = parse_target_label(rest[1])
        return Name(TARGET, zone, ip=ip) if ip else None
    fields = ("product", "env", "job", "service")
    if len(rest) > len(fields):
        return None
    if any(label_problem(value, field) for value, field in zip(rest, fields)):
        return None
    if not rest:
        return Name(ZONE, zone)
    if len(rest) < 4:
        return Name(NODE, zone, path=rest)
    product, env, job, service = rest
    return Name(ADDRESS, zone, address=Address(service, job, env, product, zone))


def node_exists(tree, path):
    """
    Whether an interior node (``(product,)``, ``(product, env)`` or
    ``(product, env, job)``) has any job below it in a zone's catalog tree.
    """
    return any(key[: len(path)] == path for key in tree)


def healthy_for(instances, service):
    """
    The instances DNS serves for one named port: healthy, sorted, one per
    (ip, port).
    """
    seen = {}
    for instance in instances:
        if instance.service == service and instance.healthy:
            seen.setdefault((instance.ip, instance.port), instance)
    return [seen[key] for key in sorted(seen, key=lambda k: (_ip_key(k[0]), k[1]))]


def _ip_key(ip):
    try:
        parsed = ipaddress.ip_address(ip)
        return (parsed.version, parsed.packed)
    except ValueError:
        return (9, ip.encode())


def _header(name, payload, ttl):
    return dns.RRHeader(name, payload.TYPE, dns.IN, ttl, payload, auth=True)


def address_record(name, ip, ttl):
    """
    An A or AAAA record for an IP, or ``None`` when it is neither.
    """
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    payload = (dns.Record_A if parsed.version == 4 else dns.Record_AAAA)(ip, ttl)
    return _header(name, payload, ttl)


def srv_answer(name, zone, instances, dns_zone, ttl):
    """
    The SRV records of an address and the A/AAAA records of their targets.

    :param name: the queried name (bytes), echoed as it was asked.
    :return: ``(answers, additional)``.
    """
    answers, additional, targets = [], [], {}
    for instance in instances:
        target = target_name(zone, instance.ip, dns_zone)
        payload = dns.Record_SRV(1, 1, instance.port, target, ttl)
        answers.append(_header(name, payload, ttl))
        if target not in targets:
            targets[target] = True
            record = address_record(target, instance.ip, ttl)
            if record is not None:
                additional.append(record)
    return answers, additional


def ip_answer(name, qtype, instances, ttl):
    """
    The A (or AAAA) records of an address: each distinct IP once.
    """
    version = 4 if qtype == dns.A else 6
    records, seen = [], set()
    for instance in instances:
        if instance.ip in seen:
            continue
        seen.add(instance.ip)
        record = address_record(name, instance.ip, ttl)
        if record is not None and record.type == (dns.A if version == 4 else dns.AAAA):
            records.append(record)
    return records


@attrs.frozen
class ZoneIdentity:
    """
    What Glimpse says about itself at the apex: its SOA and NS.

    :ivar dns_zone: the zone, canonical form.
    :ivar ns_ip: the address advertised for the name server.
    :ivar negative_ttl: the SOA minimum, the TTL of negative answers.
    """

    dns_zone: str
    ns_ip: str
    ttl: int = 5
    negative_ttl: int = 5

    @property
    def ns_name(self):
        """
        The name server's name, inside the zone: ``ns.<dns_zone>``.
        """
        return f"ns.{self.dns_zone}"

    def soa(self, serial):
        """
        The apex SOA record for a view serial.
        """
        payload = dns.Record_SOA(
            mname=self.ns_name, rname=f"hostmaster.{self.dns_zone}", serial=serial,
            refresh=60, retry=30, expire=3600, minimum=self.negative_ttl,
            ttl=self.negative_ttl)
        return _header(self.dns_zone, payload, self.negative_ttl)

    def ns(self):
        """
        The apex NS record.
        """
        return _header(self.dns_zone, dns.Record_NS(self.ns_name, self.ttl), self.ttl)

    def ns_address(self):
        """
        The A/AAAA record of the name server's name.
        """
        return address_record(self.ns_name, self.ns_ip, self.ttl)
