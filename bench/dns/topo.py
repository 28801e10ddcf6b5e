"""
The benchmark topology, written once for every server: Glimpse (provider
states), unbound (local-data), NSD and stock twisted.names (a BIND zone
file) and Consul's own DNS (the same registrations, asked by Consul names).
"""

import ipaddress

ZONE = "glimpse.test"
PORTS = {"http": 8080, "admin": 8081, "grpc": 8082, "metrics": 8083}
JOBS = 250  # x 4 ports = 1,000 distinct addresses
PER_JOB = 2
TTL = 5
#: The servers measured, each the same questions (Consul's in its names).
SERVERS = ["unbound", "nsd", "glimpse", "twisted", "consul"]
#: The workloads: transport, query type and how many distinct names.  Over
#: UDP dnsperf uses 4 sockets, over TCP 8 connections (-c), each with at
#: most 100 queries outstanding in all (-q).
WORKLOADS = [(mode, qtype, count) for mode in ("udp", "tcp")
             for qtype, count in (("SRV", 1), ("A", 1), ("SRV", 1000), ("A", 1000))]
#: dnsperf's clients (-c) per transport.
CLIENTS = {"udp": 4, "tcp": 8}


def jobs():
    """
    ``[(job, [ip, ...]), ...]``: shop/prod/<job> with its instances' IPs.
    """
    return [(f"job{j:03d}", [f"10.{100 + j // 250}.{j % 250}.{i + 1}" for i in range(PER_JOB)])
            for j in range(JOBS)]


def glimpse_name(port, job):
    """
    The Glimpse address of a job's named port.
    """
    return f"{port}.{job}.prod.shop.ams.{ZONE}"


def consul_name(port, job):
    """
    The name Consul's DNS answers the same question under.
    """
    return f"{port}.shop--prod--{job}.service.ams.consul"


def provider_states(chunk=25):
    """
    Provider states of ``chunk`` jobs each (at most 200 registrations per
    PUT keeps the agent's connection limit far).
    """
    all_jobs = jobs()
    for start in range(0, len(all_jobs), chunk):
        yield f"bench-{start // chunk}", {"instances": [
            {"product": "shop", "env": "prod", "job": job, "instance": f"{job}-{i}",
             "address": ip, "ports": PORTS}
            for job, ips in all_jobs[start:start + chunk] for i, ip in enumerate(ips)]}


def target(ip):
    """
    The SRV target Glimpse gives an IP.
    """
    return f"{ipaddress.ip_address(ip).packed.hex()}.addr.ams.{ZONE}."


def records():
    """
    Every record of the topology as zone-file lines (owner TTL IN type
    data), the SRV targets' A records included.
    """
    lines = []
    for job, ips in jobs():
        for port, number in PORTS.items():
            name = glimpse_name(port, job) + "."
            for ip in ips:
                lines.append(f"{name} {TTL} IN SRV 1 1 {number} {target(ip)}")
                lines.append(f"{name} {TTL} IN A {ip}")
        for ip in ips:
            lines.append(f"{target(ip)} {TTL} IN A {ip}")
    return lines


def bind_zone():
    """
    The topology as a BIND zone file for stock twisted.names.
    """
    head = [f"$ORIGIN {ZONE}.", f"$TTL {TTL}",
            f"@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 60 30 3600 {TTL}",
            f"@ IN NS ns.{ZONE}.", "ns IN A 127.0.0.1"]
    return "\n".join(head + records()) + "\n"


def unbound_conf(port, workdir):
    """
    An unbound serving the topology as local-data, one thread, no
    validation, no logging.
    """
    data = "\n".join(f'    local-data: "{line}"' for line in records())
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    do-ip6: no
    local-zone: "{ZONE}." static
{data}
remote-control:
    control-enable: no
"""


def nsd_conf(port, workdir, zone_path):
    """
    An NSD serving the topology's zone file, one server process, no
    response rate limiting (Debian's NSD limits identical answers to 200 a
    second per /24 by default: the 1-name workloads would measure that), no
    zone transfers, no remote control, no logging.
    """
    return f"""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    server-count: 1
    tcp-count: 256
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    database: ""
    zonelistfile: "{workdir}/nsd-zone.list"
    xfrdfile: "{workdir}/nsd-xfrd.state"
    xfrdir: "{workdir}"
    pidfile: ""
    logfile: "{workdir}/nsd.log"
    verbosity: 0
    hide-version: yes
    do-ip6: no
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "{ZONE}."
    zonefile: "{zone_path}"
"""


def query_files(workdir):
    """
    dnsperf input files: ``{(server, qtype, names): path}`` for servers
    ``glimpse`` (also unbound and twisted) and ``consul``.
    """
    files = {}
    pairs = [(port, job) for job, _ in jobs() for port in PORTS]
    for kind, namer in (("glimpse", glimpse_name), ("consul", consul_name)):
        for qtype in ("SRV", "A"):
            for count in (1, 1000):
                path = f"{workdir}/{kind}-{qtype}-{count}.txt"
                with open(path, "w") as f:
                    for port, job in pairs[:count]:
                        f.write(f"{namer(port, job)} {qtype}\n")
                files[(kind, qtype, count)] = path
    return files
