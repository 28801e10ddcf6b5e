"""
Thousands of jobs written straight into a zone's catalog, for the scale
tests and ``make bench-scale``: ``PUT /v1/txn`` on a server, 128 operations
(a node, its instances and their checks) per transaction, several
transactions at once.  Registrations are shaped as a provider's
(docs/consul-mapping.md), on external nodes that no agent owns, so no
anti-entropy ever touches them.  Blocking (urllib, threads).

    topology = synthetic_topology(jobs=5000, instances=10000)
    write_catalog(zone.servers[0].url, topology)
    flip_checks(zone.servers[0].url, topology.instances[:100], "critical")
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

__all__ = ["BulkTopology", "CatalogInstance", "flip_checks", "synthetic_topology", "write_catalog"]

#: The most operations Consul takes in one transaction (``maxTxnOps``).
MAX_TXN_OPS = 128
#: The first address handed to instances: 10.64.0.1, then up.
FIRST_IP = ipaddress.IPv4Address("10.64.0.1")


@attrs.frozen
class CatalogInstance:
    """
    One named port of one instance, as registered.

    :ivar node: the catalog node it is on.
    :ivar node_ip: that node's address.
    :ivar job: its job label (product ``shop``, env ``prod``).
    :ivar instance: the instance's name.
    :ivar ip: its address.
    :ivar port: its port (named ``http``).
    """

    node: str
    node_ip: str
    job: str
    instance: str
    ip: str
    port: int

    @property
    def service(self) -> str:
        """
        Its Consul service name.
        """
        return f"shop--prod--{self.job}"

    @property
    def service_id(self) -> str:
        """
        Its registration ID, as a provider ``bulk`` writes it.
        """
        return f"bulk:{self.service}:{self.instance}:http"

    @property
    def check_id(self) -> str:
        """
        Its one check's ID.
        """
        return f"{self.service_id}:ttl"

    def dns_name(self, zone: str, dns_zone: str) -> str:
        """
        The name DNS answers its job's ``http`` port under.
        """
        return f"http.{self.job}.prod.shop.{zone}.{dns_zone}"


@attrs.frozen
class BulkTopology:
    """
    A synthetic topology: instances spread over jobs and nodes.

    :ivar instances: every instance, grouped by node.
    :ivar jobs: every job label, in order.
    """

    instances: tuple[CatalogInstance, ...]
    jobs: tuple[str, ...]

    def of_job(self) -> dict[str, list[CatalogInstance]]:
        """
        The instances of each job.
        """
        by_job: dict[str, list[CatalogInstance]] = {job: [] for job in self.jobs}
        for instance in self.instances:
            by_job[instance.job].append(instance)
        return by_job


def synthetic_topology(jobs: int, instances: int, per_node: int = 63,
                       prefix: str = "j") -> BulkTopology:
    """
    ``instances`` instances over ``jobs`` jobs (round robin, so each job has
    ``instances // jobs`` or one more), ``per_node`` of them per node (63:
    a node, its instances and their checks fill one transaction).

    :param jobs: how many jobs.
    :param instances: how many instances, at least ``jobs``.
    :param per_node: instances per catalog node.
    :param prefix: the jobs' labels are ``<prefix><n>``.
    """
    if instances < jobs:
        raise ValueError(f"{instances} instances cannot fill {jobs} jobs")
    width = len(str(jobs - 1))
    labels = tuple(f"{prefix}{n:0{width}d}" for n in range(jobs))
    made = []
    for n in range(instances):
        node = n // per_node
        made.append(CatalogInstance(
            node=f"bulk-{prefix}-{node}", node_ip=str(FIRST_IP + 200_000 + node),
            job=labels[n % jobs], instance=f"i{n}", ip=str(FIRST_IP + n),
            port=20000 + n % 40000))
    return BulkTopology(tuple(made), labels)


def _ops(node: Sequence[CatalogInstance], status: str) -> list[dict[str, object]]:
    first = node[0]
    ops: list[dict[str, object]] = [
        {"Node": {"Verb": "set", "Node": {"Node": first.node, "Address": first.node_ip}}}]
    for i in node:
        ops.append({"Service": {"Verb": "set", "Node": i.node, "Service": {
            "ID": i.service_id, "Service": i.service, "Tags": ["http"], "Address": i.ip,
            "Port": i.port, "Meta": {"glimpse-provider": "bulk", "glimpse-instance": i.instance,
                                     "glimpse-port": "http"}}}})
        ops.append(_check_op(i, status))
    return ops


def _check_op(i: CatalogInstance, status: str) -> dict[str, object]:
    return {"Check": {"Verb": "set", "Check": {
        "Node": i.node, "CheckID": i.check_id, "Name": "ttl", "Status": status,
        "ServiceID": i.service_id, "ServiceName": i.service}}}


def _txn(url: str, ops: list[dict[str, object]], timeout: float) -> None:
    request = urllib.request.Request(f"{url}/v1/txn", data=json.dumps(ops).encode(),
                                     method="PUT")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def _chunks(ops: Iterable[dict[str, object]], size: int) -> Iterator[list[dict[str, object]]]:
    batch: list[dict[str, object]] = []
    for op in ops:
        batch.append(op)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _nodes(instances: Iterable[CatalogInstance]) -> list[list[CatalogInstance]]:
    by_node: dict[str, list[CatalogInstance]] = {}
    for instance in instances:
        by_node.setdefault(instance.node, []).append(instance)
    return list(by_node.values())


def write_catalog(server_url: str, topology: BulkTopology, status: str = "passing",
                  threads: int = 8, timeout: float = 30.0) -> None:
    """
    Register every instance of ``topology`` with one check in ``status``.

    :param server_url: a server's HTTP API (any server: writes go to the
        leader).
    :param topology: what to register.
    :param status: the checks' status.
    :param threads: transactions under way at once.
    :param timeout: seconds one transaction may take.
    :raises urllib.error.URLError: when Consul refuses a transaction.
    """
    batches = []
    for node in _nodes(topology.instances):
        ops = _ops(node, status)
        # A node with more instances than a transaction holds is sent in
        # several, each starting with the node.
        head, rest = ops[0], ops[1:]
        batches += [[head, *chunk] for chunk in _chunks(rest, MAX_TXN_OPS - 1)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda ops: _txn(server_url, ops, timeout), batches))


def flip_checks(server_url: str, instances: Iterable[CatalogInstance], status: str,
                threads: int = 4, timeout: float = 30.0) -> None:
    """
    Set the check of each instance to ``status``, in as few transactions as
    fit.

    :param server_url: a server's HTTP API.
    :param instances: whose checks to set.
    :param status: ``passing``, ``warning`` or ``critical``.
    """
    batches = list(_chunks((_check_op(i, status) for i in instances), MAX_TXN_OPS))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda ops: _txn(server_url, ops, timeout), batches))
