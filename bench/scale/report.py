"""
What ``make bench-scale`` prints: each run's figures side by side, and
each baseline's server load as a ratio to Glimpse's, from the same run.
"""


def _fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def _get(run, *keys):
    for key in keys:
        if not isinstance(run, dict) or key not in run:
            return None
        run = run[key]
    return run


ROWS = [
    ("time to answer every job (s)", ("serving_all_s",), 1),
    ("connections to its agent (most)", ("connections_most",), 0),
    ("RSS (MiB)", ("rss_mb",), 0),
    ("requests/s to its agent, idle", ("idle", "requests"), 0),
    ("  of them cached reads", ("idle", "cached"), 0),
    ("requests/s to its agent, 10 changes/s", ("changes", "requests"), 0),
    ("requests/s to its agent, servers down", ("outage", "requests"), 1),
    ("its CPU (s/s), idle", ("idle", "cpu"), 3),
    ("its agent's CPU (s/s), idle", ("idle", "agent_cpu"), 3),
    ("its agent's CPU (s/s), 10 changes/s", ("changes", "agent_cpu"), 3),
    ("servers: RPCs/s, idle", ("idle", "servers", "rpc"), 1),
    ("servers: RPCs/s, 10 changes/s", ("changes", "servers", "rpc"), 1),
    ("servers: blocking queries parked", ("idle", "servers", "blocking"), 0),
    ("servers: streaming subscriptions", ("idle", "servers", "streams"), 0),
    ("servers: RSS (MiB, all three)", ("idle", "servers", "rss_mb"), 0),
    ("servers: CPU (s/s), idle", ("idle", "servers", "cpu"), 3),
    ("servers: CPU (s/s), 10 changes/s", ("changes", "servers", "cpu"), 3),
    ("servers: RPCs per lookup", ("rpc_per_lookup",), 2),
]


def report(results):
    """
    Print the table, then Glimpse's change -> DNS figures and the ratios.
    """
    runs = results["runs"]
    names = list(runs)
    print()
    print(f"{results['jobs']:,} jobs, {results['instances']:,} instances; registered in "
          f"{results['registered_s']:.0f} s; whole run {results['total_s'] / 60:.1f} min")
    print(f"{'':<40}" + "".join(f"{name:>24}" for name in names))
    for label, keys, digits in ROWS:
        cells = [_get(runs[name], *keys) for name in names]
        if all(cell is None for cell in cells):
            continue
        print(f"{label:<40}" + "".join(f"{_fmt(cell, digits):>24}" for cell in cells))
    topology = results.get("topology")
    if topology:
        print(f"glimpse: /v1/topology/ams ({topology['instances']:,} instances) "
              f"{topology['cold_s']:.2f} s fresh, {topology['warm_s'] * 1000:.0f} ms after")
    changes = _get(runs, "glimpse", "changes") or {}
    if changes:
        print(f"glimpse: change -> DNS p50 {changes['p50_s'] * 1000:.0f} ms, "
              f"p99 {changes['p99_s'] * 1000:.0f} ms over {changes['seen']} changes "
              f"({changes['unseen']} not seen within 30 s)")
    base = runs.get("glimpse")
    for name in names[1:]:
        for label, keys in (("RPCs/s with changes", ("changes", "servers", "rpc")),
                            ("blocking queries parked", ("idle", "servers", "blocking")),
                            ("streams", ("idle", "servers", "streams")),
                            ("connections", ("connections_most",))):
            mine, theirs = _get(base, *keys), _get(runs[name], *keys)
            if mine and theirs is not None:
                print(f"{name}: {label} x{theirs / mine:.2f} Glimpse's")
