"""
The Consul client against a real client agent with Consul's default
settings, in front of a 3-server zone: cached reads come from the agent's
streaming view, pipelined on one connection, and say so.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from glimpse.consul import connect_consul
from glimpse.dev.registrations import register, set_check

pytestmark = pytest.mark.consul


@pytest_twisted.ensureDeferred
async def test_cached_reads_are_streamed_and_pipelined(consul_cluster):
    """
    A hundred cached reads of registered jobs share one connection to the
    client agent, answer what a plain read answers, come from the streaming
    backend, and the same index comes back unchanged (not decoded).
    """
    url = consul_cluster.client.url
    for n in range(5):
        register(url, f"job{n}", f"i{n}", ip=f"127.0.6.{n + 1}")
    client, connections = connect_consul(reactor, url, max_conns=8, reserved=2)
    try:
        plain = await client.health_service("ams", "shop--prod--job0")
        reads = [client.health_cached("ams", f"shop--prod--job{n % 5}") for n in range(100)]
        answers = [await d for d in reads]
        assert answers[0].body == plain.body
        assert {a.backend for a in answers} == {"streaming"}
        assert client.budget.busy == 1  # the pipelined connection, and no other
        again = await client.health_cached("ams", "shop--prod--job0", answers[0].index)
        assert again.unchanged
        check = register(url, "job0", "i0", ip="127.0.6.1")
        set_check(url, check, "critical")
        deadline = reactor.seconds() + 15
        changed = await client.health_cached("ams", "shop--prod--job0", answers[0].index)
        while changed.unchanged and reactor.seconds() < deadline:
            await deferLater(reactor, 0.05)
            changed = await client.health_cached("ams", "shop--prod--job0", answers[0].index)
        assert changed.body[0]["Checks"][-1]["Status"] == "critical"
    finally:
        await connections.stopService()
