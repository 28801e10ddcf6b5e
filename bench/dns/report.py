"""
What ``make bench-dns`` prints: the figures of every server as ratios to
unbound's, the targets of issue #3, and with a baseline, this checkout's
figures as ratios to the baseline's.
"""

from bench.dns.topo import WORKLOADS


def _ratio(value, base, width=7):
    return f"{value / base:>{width}.2f}" if base else f"{'-':>{width}}"


def report(results, chosen):
    """
    Print the dnsperf figures, each with its ratio to unbound (when it ran);
    with a baseline, this checkout's ratios to it.
    """
    print("qps, mean latency and CPU: medians of saturating runs (dnsperf -c 4 -q 100); p99: "
          "runs at a fixed offered load (--latency-rate)")
    print(f"{'workload':<14}{'server':<9}{'qps':>9}{'x unb':>7}{'mean ms':>9}{'x unb':>7}"
          f"{'p99 ms':>8}{'x unb':>7}{'CPU us/q':>10}{'x unb':>7}  rcodes")
    for qtype, count in WORKLOADS:
        base = results.get(("unbound", qtype, count), {})
        for server in chosen:
            r = results[(server, qtype, count)]
            print(f"{qtype + ' x' + str(count):<14}{server:<9}"
                  f"{r['qps']:>9.0f}{_ratio(r['qps'], base.get('qps'))}"
                  f"{r['mean_ms']:>9.3f}{_ratio(r['mean_ms'], base.get('mean_ms'))}"
                  f"{r['p99_ms']:>8.3f}{_ratio(r['p99_ms'], base.get('p99_ms'))}"
                  f"{r['cpu_us']:>10.2f}{_ratio(r['cpu_us'], base.get('cpu_us'))}  "
                  f"{r['codes']}" + (f" lost {r['lost']}" if r["lost"] else ""))
    shown = [s for s in ("glimpse", "baseline", "unbound") if s in chosen]
    for qtype, count in WORKLOADS:
        print(f"CPU us/query of every run, {qtype} x{count}: " + "; ".join(
            f"{server} " + " ".join(f"{c:.2f}" for c in results[(server, qtype, count)]["cpu_runs"])
            for server in shown))
    if "baseline" in chosen and "glimpse" in chosen:
        compare_baseline(results)
    if not {"glimpse", "unbound", "twisted", "consul"} <= set(chosen):
        return
    for qtype, count in WORKLOADS:
        qps = {server: results[(server, qtype, count)]["qps"]
               for server in ("glimpse", "twisted", "consul", "unbound")}
        print(f"Glimpse {qtype} x{count}: {qps['glimpse'] / qps['twisted']:.1f}x stock "
              f"twisted.names, {qps['glimpse'] / qps['consul']:.2f}x Consul DNS, "
              f"{qps['glimpse'] / qps['unbound']:.2f}x unbound")
    for count in (1, 1000):
        print(f"Targets, cached SRV x{count}: " + "; ".join(srv_targets(results, count)))


def compare_baseline(results):
    """
    This checkout's Glimpse against the baseline's, per workload: the ratio
    of the medians and of each round's pair of runs (run side by side), for
    qps (above 1: this checkout answers more) and CPU per query (below 1:
    this checkout spends less).
    """
    print("\nThis checkout vs baseline (same run; qps > 1 and CPU < 1 favour this checkout):")
    for qtype, count in WORKLOADS:
        mine, base = results[("glimpse", qtype, count)], results[("baseline", qtype, count)]
        pairs = list(zip(mine["runs"], base["runs"], strict=True))
        print(f"  {qtype + ' x' + str(count):<10} qps {mine['qps']:.0f} vs {base['qps']:.0f} "
              f"= {mine['qps'] / base['qps']:.3f}; CPU {mine['cpu_us']:.2f} vs "
              f"{base['cpu_us']:.2f} us/q = {mine['cpu_us'] / base['cpu_us']:.3f}; per round: "
              "qps " + " ".join(f"{m['qps'] / b['qps']:.3f}" for m, b in pairs)
              + ", CPU " + " ".join(f"{m['cpu_us'] / b['cpu_us']:.3f}" for m, b in pairs))


def srv_targets(results, count):
    """
    The cached SRV targets, each with its figure and whether it is met:
    qps at least 0.7x unbound's, 5x stock twisted.names', 1.5x Consul DNS's,
    and at most 10 us of server CPU per query (with unbound's in the same
    run beside it: the machine's speed moves both).
    """
    g = results[("glimpse", "SRV", count)]
    lines = []
    for server, name, least in (("unbound", "unbound", 0.7), ("twisted", "twisted.names", 5),
                                ("consul", "Consul DNS", 1.5)):
        ratio = g["qps"] / results[(server, "SRV", count)]["qps"]
        lines.append(f"qps {ratio:.2f}x {name} (>= {least}) {_met(ratio >= least)}")
    unbound = results[("unbound", "SRV", count)]["cpu_us"]
    lines.append(f"CPU {g['cpu_us']:.2f} us/query (<= 10; unbound {unbound:.2f} in this run) "
                 f"{_met(g['cpu_us'] <= 10)}")
    return lines


def _met(ok):
    return "met" if ok else "NOT met"

