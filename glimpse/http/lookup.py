"""
``GET /v1/lookup/{address}``: every instance of an address with its full
health, served from the view.
"""

from twisted.internet.defer import maybeDeferred

from glimpse.address import InvalidName, parse_address
from glimpse.http._json import ErrorResource, HTTPError, JSONResource, render_deferred
from glimpse.topology import Unavailable


def zone_or_error(topology, zone):
    """
    Raise the L{HTTPError} for a zone that cannot be served, else nothing.
    """
    try:
        problem = topology.zone_problem(zone)
    except KeyError:
        known = ", ".join(sorted(topology.zones)) or "none yet"
        raise HTTPError(404, f"unknown zone {zone!r}", f"known zones: {known}")
    if problem:
        raise HTTPError(503, "Glimpse cannot serve this zone now", problem)


def lookup(topology, address, dns_zone, healthy_only=False):
    """
    The lookup answer for an L{glimpse.address.Address}.

    :return: a Deferred of ``(200, body)``, failing with an L{HTTPError}.
    """
    zone_or_error(topology, address.zone)
    ports = topology.zones[address.zone].ports(address.product, address.env, address.job)
    if ports is None or address.service not in ports:
        raise HTTPError(404, f"no address {address.relative()!r}",
                        "check the spelling; /v1/topology lists what exists")
    d = topology.instances(address.zone, address.consul_service)

    def answer(instances):
        chosen = [i for i in instances if i.service == address.service
                  and (i.healthy or not healthy_only)]
        return 200, {
            "address": address.relative(),
            "fqdn": address.fqdn(dns_zone),
            "zone": address.zone,
            "instances": [i.to_json(address.zone) for i in chosen],
        }

    def unavailable(failure):
        failure.trap(Unavailable)
        raise HTTPError(503, "Glimpse cannot serve this address now", str(failure.value))

    return d.addCallbacks(answer, unavailable)


class LookupResource(JSONResource):
    """
    ``/v1/lookup/``: one child per address.
    """

    def __init__(self, topology, dns_zone):
        super().__init__()
        self._topology = topology
        self._dns_zone = dns_zone

    def getChild(self, path, request):
        if request.postpath:
            return ErrorResource(404, "not found", "an address is one path segment: "
                                 "/v1/lookup/http.web.prod.shop.ams")
        try:
            address = parse_address(path.decode("utf-8", "replace"), self._dns_zone)
        except InvalidName as e:
            return ErrorResource(400, "invalid address", str(e))
        return AddressResource(self._topology, address, self._dns_zone)

    def render_GET(self, request):
        raise HTTPError(400, "no address", "append one: /v1/lookup/http.web.prod.shop.ams")


class AddressResource(JSONResource):
    """
    One address.
    """

    isLeaf = True

    def __init__(self, topology, address, dns_zone):
        super().__init__()
        self._topology = topology
        self._address = address
        self._dns_zone = dns_zone

    def render_GET(self, request):
        healthy = request.args.get(b"healthy", [b"false"])[0].lower()
        if healthy not in (b"true", b"false", b"1", b"0"):
            raise HTTPError(400, "invalid 'healthy'", "use ?healthy=true or ?healthy=false")
        d = maybeDeferred(lookup, self._topology, self._address, self._dns_zone,
                          healthy in (b"true", b"1"))
        return render_deferred(request, d)
