"""
Tests for :obj:`glimpse.address`: how addresses are read and written.
"""

import pytest

from glimpse.address import (
    Address,
    InvalidName,
    consul_service_name,
    label_problem,
    normalize_zone,
    parse_address,
    parse_target_label,
    relative_labels,
    split_consul_service,
    target_name,
)

DNS_ZONE = "glimpse.test"
WEB = Address(service="http", job="web", env="prod", product="shop", zone="ams")


@pytest.mark.parametrize("text", [
    "http.web.prod.shop.ams",
    "http.web.prod.shop.ams.",
    "http.web.prod.shop.ams.glimpse.test",
    "http.web.prod.shop.ams.glimpse.test.",
    "HTTP.Web.PROD.shop.AMS.Glimpse.Test.",
])
def test_parse_any_spelling(text):
    """
    An address may be written with or without the DNS zone and the trailing
    dot, in any case; all spellings mean the same address.
    """
    assert parse_address(text, DNS_ZONE) == WEB


def test_address_formats():
    """
    An address writes itself back most specific first, with and without the
    DNS zone, and knows the Consul service that holds its job.
    """
    assert WEB.relative() == "http.web.prod.shop.ams"
    assert WEB.fqdn(DNS_ZONE) == "http.web.prod.shop.ams.glimpse.test."
    assert WEB.consul_service == "shop--prod--web"
    assert parse_address(WEB.fqdn(DNS_ZONE), DNS_ZONE) == WEB


@pytest.mark.parametrize("text", ["web.prod.shop.ams", "a.http.web.prod.shop.ams", ""])
def test_wrong_number_of_labels(text):
    """
    A name with other than five labels below the DNS zone is refused with a
    message showing the shape of an address and an example.
    """
    with pytest.raises(InvalidName) as raised:
        parse_address(text, DNS_ZONE)
    message = str(raised.value)
    assert "<service>.<job>.<env>.<product>.<zone>[.glimpse.test]" in message
    assert "e.g. http.web.prod.shop.ams" in message


def test_wildcard_allowed_when_asked():
    """
    With ``wildcard``, any field but the zone may be ``*``.
    """
    assert parse_address("*.*.*.*.ams", DNS_ZONE, wildcard=True) == Address(
        "*", "*", "*", "*", "ams")
    assert parse_address("http.*.prod.shop.ams", DNS_ZONE, wildcard=True).job == "*"


def test_wildcard_refused_by_default():
    """
    Without ``wildcard``, ``*`` is not a label and the message says so.
    """
    with pytest.raises(InvalidName, match="job '\\*' is not a DNS label"):
        parse_address("http.*.prod.shop.ams", DNS_ZONE)


def test_wildcard_zone_refused():
    """
    The zone of an address cannot be ``*``, even with ``wildcard``: the
    message asks for one zone.
    """
    with pytest.raises(InvalidName, match="name one zone"):
        parse_address("http.web.prod.shop.*", DNS_ZONE, wildcard=True)


@pytest.mark.parametrize(("text", "field", "value"), [
    ("http.web.prod.-shop.ams", "product", "-shop"),
    ("http.web.prod-.shop.ams", "env", "prod-"),
    ("http.we_b.prod.shop.ams", "job", "we_b"),
    ("http." + "w" * 64 + ".prod.shop.ams", "job", "w" * 64),
    ("ht tp.web.prod.shop.ams", "service", "ht tp"),
])
def test_label_grammar(text, field, value):
    """
    A field that is not a DNS label is refused with a message naming the
    field and value and saying which characters to use.
    """
    with pytest.raises(InvalidName) as raised:
        parse_address(text, DNS_ZONE)
    message = str(raised.value)
    assert f"{field} {value!r} is not a DNS label" in message
    assert "1-63 lower-case letters, digits and '-'" in message


def test_longest_label_accepted():
    """
    A label of 63 characters is still a label.
    """
    assert parse_address("http." + "w" * 63 + ".prod.shop.ams", DNS_ZONE).job == "w" * 63


@pytest.mark.parametrize("field", ["product", "env", "job"])
def test_double_dash_refused_in_job_fields(field):
    """
    Product, env and job must not contain ``--``, the separator of Consul
    service names; the message says why.
    """
    assert label_problem("a--b", field) == (
        f"{field} 'a--b' must not contain '--' (Glimpse joins fields with it)")


@pytest.mark.parametrize("field", ["service", "zone"])
def test_double_dash_allowed_elsewhere(field):
    """
    The service (port name) and zone may contain ``--``: they are not part
    of the Consul service name.
    """
    assert label_problem("a--b", field) is None


def test_double_dash_refused_in_address():
    """
    Parsing an address applies the ``--`` rule too.
    """
    with pytest.raises(InvalidName, match="must not contain '--'"):
        parse_address("http.web.pr--od.shop.ams", DNS_ZONE)


def test_product_addr_reserved():
    """
    No product may be called ``addr``: that label names SRV targets.
    """
    with pytest.raises(InvalidName, match="product must not be 'addr'"):
        parse_address("http.web.prod.addr.ams", DNS_ZONE)
    assert label_problem("addr", "job") is None


def test_label_must_be_string():
    """
    A field that is not a string is reported as such.
    """
    assert label_problem(8080, "job") == "job must be a string"


def test_normalize_zone():
    """
    A DNS zone is used lower case and without the trailing dot; an empty or
    malformed one is refused.
    """
    assert normalize_zone(" Glimpse.Test. ") == "glimpse.test"
    with pytest.raises(InvalidName, match="must not be empty"):
        normalize_zone(".")
    with pytest.raises(InvalidName, match="'bad_label' in DNS zone"):
        normalize_zone("bad_label.test")


def test_consul_service_round_trip():
    """
    Product, env and job join into a Consul service name and split back.
    """
    name = consul_service_name("shop", "prod", "web")
    assert name == "shop--prod--web"
    assert split_consul_service(name) == ("shop", "prod", "web")


@pytest.mark.parametrize("name", [
    "consul", "shop--web", "a--b--c--d", "shop--prod--", "Shop--prod--web", "addr--prod--web",
])
def test_split_foreign_service(name):
    """
    A Consul service name Glimpse did not write (Consul's own ``consul``,
    wrong number of fields, an invalid field) is not a job.
    """
    assert split_consul_service(name) is None


def test_relative_labels():
    """
    The labels below the DNS zone come outermost first and lower case; the
    apex has none; a name outside the zone has no labels at all.
    """
    assert relative_labels("HTTP.web.prod.shop.ams.glimpse.test.", DNS_ZONE) == [
        "ams", "shop", "prod", "web", "http"]
    assert relative_labels("glimpse.test.", DNS_ZONE) == []
    assert relative_labels("Glimpse.Test", DNS_ZONE) == []
    assert relative_labels("example.com.", DNS_ZONE) is None
    # A suffix of the zone's text that is not on a label boundary is outside.
    assert relative_labels("xglimpse.test.", DNS_ZONE) is None


@pytest.mark.parametrize(("ip", "label"), [
    ("10.0.0.1", "0a000001"),
    ("2001:db8::1", "20010db8000000000000000000000001"),
])
def test_target_round_trip(ip, label):
    """
    An instance IP, v4 or v6, becomes an SRV target name under
    ``addr.<zone>`` whose first label gives the IP back.
    """
    name = target_name("ams", ip, DNS_ZONE)
    assert name == f"{label}.addr.ams.glimpse.test."
    assert parse_target_label(name.split(".")[0]) == ip


@pytest.mark.parametrize("label", ["0a0000", "0a00000g", "0a0000010", ""])
def test_target_label_malformed(label):
    """
    A target label of the wrong length or not hex encodes no IP.
    """
    assert parse_target_label(label) is None
