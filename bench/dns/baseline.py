"""
A second Glimpse, from another checkout, for ``make bench-dns
BENCH_ARGS='--baseline-checkout DIR'``: it runs beside this checkout's
Glimpse on the same Consul and takes its turn in the same rotation, so that
"this checkout vs baseline" is measured in one run, under the same drift of
the machine's speed.  Make DIR with ``git worktree add --detach DIR <commit>``.

The baseline reads the view this checkout's Glimpse registered (its own
state directory is empty: it registers nothing and reconciles nothing).
"""

import os
from pathlib import Path

import attrs

from glimpse.dev import DevGlimpse, free_ports

#: Printed by the baseline before twistd starts: where its glimpse came from.
_FROM = "bench-dns baseline: glimpse imported from "


@attrs.define
class CheckoutGlimpse(DevGlimpse):
    """
    A ``twistd -n glimpse`` that imports glimpse from ``checkout`` first
    (ahead of this checkout, which the editable install and ``PYTHONPATH``
    put on the path).
    """

    checkout: str = ""

    def argv(self):
        argv = super().argv()
        argv[argv.index("-c") + 1] = (
            f"import sys; sys.path.insert(0, {self.checkout!r}); import glimpse; "
            f"print({_FROM!r} + glimpse.__file__, flush=True); "
            "from twisted.scripts.twistd import run; run()")
        return argv


def start_baseline(checkout, consul_url, dns_zone, workdir):
    """
    Start the Glimpse of ``checkout`` on free loopback ports, and check that
    it runs that checkout's code (not this one's, which would compare this
    checkout with itself).

    :return: the running :class:`CheckoutGlimpse`.
    """
    checkout = str(Path(checkout).resolve())
    if not Path(checkout, "glimpse", "__init__.py").is_file():
        raise SystemExit(f"--baseline-checkout {checkout}: no glimpse package there")
    os.makedirs(workdir, exist_ok=True)
    dns_port, http_port = free_ports(2)
    glimpse = CheckoutGlimpse(
        consul_url=consul_url, dns_zone=dns_zone, dns_port=dns_port, http_port=http_port,
        state_dir=os.path.join(workdir, "state"), log_path=os.path.join(workdir, "glimpse.log"),
        extra_args=[], checkout=checkout)
    glimpse.start()
    log = Path(glimpse.log_path).read_text(errors="replace")
    source = next((line[len(_FROM):] for line in log.splitlines() if line.startswith(_FROM)), "")
    if not source.startswith(checkout + os.sep):
        glimpse.stop()
        raise SystemExit(f"the baseline imported glimpse from {source or '?'}, not {checkout}")
    return glimpse
