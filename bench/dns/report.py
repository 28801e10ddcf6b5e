"""
What ``make bench-dns`` prints: the figures of every server as ratios to
unbound's, the targets of issues #3 (cached SRV over UDP) and #14 (TCP),
and with twins (a baseline checkout, this checkout with rotation off), this
checkout's figures as ratios to each twin's.
"""

from bench.dns.topo import CLIENTS

#: The twins' names as printed.
TWIN_NAMES = {"baseline": "baseline", "unrotated": "rotation off (--dns-rotations=1)"}


def _ratio(value, base, width=7):
    return f"{value / base:>{width}.2f}" if base else f"{'-':>{width}}"


def _label(mode, qtype, count):
    return f"{mode.upper()} {qtype} x{count}"


def report(results, chosen, workloads):
    """
    Print the dnsperf figures, each with its ratio to unbound (when it ran);
    with twins, this checkout's ratios to each.
    """
    print("qps, mean latency and CPU: medians of saturating runs (dnsperf -q 100, "
          + ", ".join(f"{mode.upper()} -c {n}" for mode, n in CLIENTS.items())
          + "); p99: runs at a fixed offered load (--latency-rate)")
    print(f"{'workload':<18}{'server':<10}{'qps':>9}{'x unb':>7}{'mean ms':>9}{'x unb':>7}"
          f"{'p99 ms':>8}{'x unb':>7}{'CPU us/q':>10}{'x unb':>7}  rcodes")
    for workload in workloads:
        base = results.get(("unbound", *workload), {})
        for server in chosen:
            r = results[(server, *workload)]
            print(f"{_label(*workload):<18}{server:<10}"
                  f"{r['qps']:>9.0f}{_ratio(r['qps'], base.get('qps'))}"
                  f"{r['mean_ms']:>9.3f}{_ratio(r['mean_ms'], base.get('mean_ms'))}"
                  f"{r['p99_ms']:>8.3f}{_ratio(r['p99_ms'], base.get('p99_ms'))}"
                  f"{r['cpu_us']:>10.2f}{_ratio(r['cpu_us'], base.get('cpu_us'))}  "
                  f"{r['codes']}" + (f" lost {r['lost']}" if r["lost"] else ""))
    shown = [s for s in ("glimpse", "baseline", "unrotated", "unbound", "nsd") if s in chosen]
    for workload in workloads:
        print(f"CPU us/query of every run, {_label(*workload)}: " + "; ".join(
            f"{server} " + " ".join(f"{c:.2f}" for c in results[(server, *workload)]["cpu_runs"])
            for server in shown))
        print(f"qps of every run, {_label(*workload)}: " + "; ".join(
            f"{server} " + " ".join(f"{run['qps']:.0f}"
                                    for run in results[(server, *workload)]["runs"])
            for server in shown))
    if "glimpse" in chosen:
        for twin in TWIN_NAMES:
            if twin in chosen:
                compare_twin(results, twin, workloads)
    if not {"glimpse", "unbound", "twisted", "consul"} <= set(chosen):
        return
    print()
    for workload in workloads:
        qps = {server: results[(server, *workload)]["qps"] for server in chosen}
        print(f"Glimpse {_label(*workload)}: {qps['glimpse'] / qps['twisted']:.1f}x stock "
              f"twisted.names, {qps['glimpse'] / qps['consul']:.2f}x Consul DNS, "
              f"{qps['glimpse'] / qps['unbound']:.2f}x unbound"
              + (f", {qps['glimpse'] / qps['nsd']:.2f}x NSD" if "nsd" in qps else ""))
    for count in (1, 1000):
        if ("udp", "SRV", count) in workloads:
            print(f"Targets, cached SRV x{count} over UDP: " + "; ".join(
                srv_targets(results, count)))
    for workload in workloads:
        if workload[0] == "tcp":
            ratio = (results[("glimpse", *workload)]["qps"]
                     / results[("unbound", *workload)]["qps"])
            print(f"Target, {_label(*workload)}: qps {ratio:.2f}x unbound (>= 0.8) "
                  f"{_met(ratio >= 0.8)}")


def compare_twin(results, twin, workloads):
    """
    This checkout's Glimpse against a twin, per workload: the ratio of the
    medians and of each round's pair of runs (run side by side), for qps
    (above 1: this checkout answers more) and CPU per query (below 1: this
    checkout spends less).
    """
    print(f"\nThis checkout vs {TWIN_NAMES[twin]} (same run; qps > 1 and CPU < 1 favour this "
          "checkout):")
    for workload in workloads:
        mine, base = results[("glimpse", *workload)], results[(twin, *workload)]
        pairs = list(zip(mine["runs"], base["runs"], strict=True))
        print(f"  {_label(*workload):<16} qps {mine['qps']:.0f} vs {base['qps']:.0f} "
              f"= {mine['qps'] / base['qps']:.3f}; CPU {mine['cpu_us']:.2f} vs "
              f"{base['cpu_us']:.2f} us/q = {mine['cpu_us'] / base['cpu_us']:.3f}; per round: "
              "qps " + " ".join(f"{m['qps'] / b['qps']:.3f}" for m, b in pairs)
              + ", CPU " + " ".join(f"{m['cpu_us'] / b['cpu_us']:.3f}" for m, b in pairs))


def srv_targets(results, count):
    """
    The cached SRV targets over UDP, each with its figure and whether it is
    met: qps at least 0.7x unbound's, 5x stock twisted.names', 1.5x Consul
    DNS's, and at most 10 us of server CPU per query (with unbound's in the
    same run beside it: the machine's speed moves both).
    """
    g = results[("glimpse", "udp", "SRV", count)]
    lines = []
    for server, name, least in (("unbound", "unbound", 0.7), ("twisted", "twisted.names", 5),
                                ("consul", "Consul DNS", 1.5)):
        ratio = g["qps"] / results[(server, "udp", "SRV", count)]["qps"]
        lines.append(f"qps {ratio:.2f}x {name} (>= {least}) {_met(ratio >= least)}")
    unbound = results[("unbound", "udp", "SRV", count)]["cpu_us"]
    lines.append(f"CPU {g['cpu_us']:.2f} us/query (<= 10; unbound {unbound:.2f} in this run) "
                 f"{_met(g['cpu_us'] <= 10)}")
    return lines


def _met(ok):
    return "met" if ok else "NOT met"
