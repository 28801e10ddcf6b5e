"""
``glimpse``: ask the local Glimpse agent from a shell.

Blocking stdlib HTTP (urllib): the CLI makes one request (or follows one
stream) and exits with a code scripts can rely on.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TextIO

from glimpse.cli.client import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Unreachable,
    exit_code,
    fetch,
    print_error,
    print_json,
    quote_segment,
    request,
    sse_events,
    table,
)
from glimpse.cli.provide import cmd_provide

#: A subcommand: parsed arguments, standard output and error in, exit code out.
Command = Callable[[argparse.Namespace, TextIO, TextIO], int]

DEFAULT_AGENT = "http://127.0.0.1:8411"

EPILOG = """\
exit codes:
  0  found / done
  1  not found (unknown address, zone or path; no instance; status: not serving)
  2  usage error (bad arguments, unreadable file)
  3  the agent is unreachable
  4  the agent refused the request (e.g. an invalid provider state; the error says why)
provide --config-dir: 1 when writing the file or reloading Consul failed (the
previous file stays), 3 when Consul is unreachable, 4 for an invalid state.
"""


def _failing(checks: Iterable[Mapping[str, Any]]) -> str:
    bad = [f"{c['name'] or c['id']}={c['status']}" for c in checks if c["status"] != "passing"]
    return ", ".join(bad) or "-"


def meta_pair(text: str) -> tuple[str, str]:
    """
    One ``--meta KEY=VALUE``.

    :raises argparse.ArgumentTypeError: for what has no ``=`` or no key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. --meta version=1.4.2")
    return key, value


def _query(args: argparse.Namespace) -> str:
    # ?healthy=true and the meta filter (--meta), as the agent takes them.
    params = [("healthy", "true")] if args.healthy else []
    params += [(f"meta.{key}", value) for key, value in args.meta or ()]
    return "?" + urllib.parse.urlencode(params) if params else ""


def _steering(body: Mapping[str, Any], err: TextIO) -> None:
    # Which zone answered an "any" address, and a job in panic, on stderr:
    # the table on stdout stays the instances.
    failover = body.get("failover")
    if failover:
        err.write(f"glimpse: {body['zone']} answers in place of {failover['from']}: "
                  f"{failover['reason']}\n")
    if body.get("panic"):
        err.write("glimpse: panic: too few instances are healthy; DNS answers every one, "
                  "the healthy ones first\n")


def cmd_lookup(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    ``glimpse lookup ADDRESS``: every instance with its health, 1 when
    there is none.
    """
    url = f"{args.agent}/v1/lookup/{quote_segment(args.address)}{_query(args)}"
    body, code = fetch("GET", url, err)
    if body is None:
        return code
    if args.json:
        print_json(body, out)
    else:
        rows = [dict(i, failing=_failing(i["checks"])) for i in body["instances"]]
        table(rows, ["instance", "service", "node", "ip", "port", "zone", "status", "healthy",
                     "weight", "failing"], out)
        _steering(body, err)
        if body.get("truncated"):
            err.write("glimpse: truncated: more instances match than the agent's --lookup-cap\n")
    return EXIT_OK if body["instances"] else EXIT_NOT_FOUND


def cmd_topology(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    ``glimpse topology [PATH]``: the children of a topology path with their
    counts, or the instances of a job.
    """
    path = "/".join(p for p in args.path.replace(".", "/").split("/") if p) if args.path else ""
    suffix = f"/{urllib.parse.quote(path)}" if path else ""
    body, code = fetch("GET", f"{args.agent}/v1/topology{suffix}", err)
    if body is None:
        return code
    if args.json:
        print_json(body, out)
    elif body["level"] == "instance":
        rows = [dict(c, ports=",".join(f"{k}:{v}" for k, v in sorted(c["ports"].items())))
                for c in body["children"]]
        table(rows, ["name", "node", "ip", "ports", "status", "drain"], out)
    else:
        table(body["children"] + [dict(body["counts"], name="(total)")],
              ["name", "instances", "passing", "warning", "critical"], out)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    ``glimpse explain ADDRESS``: each instance, whether DNS answers with it,
    and why; 1 when there is none.
    """
    body, code = fetch("GET", f"{args.agent}/v1/explain/{quote_segment(args.address)}", err)
    if body is None:
        return code
    if args.json:
        print_json(body, out)
    else:
        if body.get("view_problem"):
            out.write(f"view: {body['view_problem']}\n")
        _steering(body, err)
        table([dict(i, in_dns="yes" if i["in_dns"] else "no") for i in body["instances"]],
              ["instance", "zone", "node", "ip", "port", "in_dns", "weight", "rule"], out)
    return EXIT_OK if body["instances"] else EXIT_NOT_FOUND


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    ``glimpse status``: the agent's own health, 1 when it cannot serve.
    """
    status, body = request("GET", f"{args.agent}/v1/status")
    if not isinstance(body, dict) or "serving" not in body:
        print_error(status, body, err)
        return EXIT_REFUSED
    if args.json:
        print_json(body, out)
    else:
        out.write(f"serving: {'yes' if body['serving'] else 'no'}   version: "
                  f"{body['version']}   local zone: {body.get('local_zone')}   "
                  f"watches: {body.get('watches')}\n")
        table([dict(v, zone=k) for k, v in sorted(body["zones"].items())],
              ["zone", "serving", "stale_seconds", "problem"], out)
    return EXIT_OK if body["serving"] else EXIT_NOT_FOUND


def _describe(kind: str, data: Any) -> str:
    if kind == "snapshot":
        lines = [f"snapshot: {len(data['instances'])} instance(s)"]
        lines += [f"  = {i['id']} {i['ip']}:{i['port']} {i['status']}" for i in data["instances"]]
        return "\n".join(lines)
    if kind == "remove":
        return f"- {data['id']}"
    if kind in ("add", "update"):
        sign = "+" if kind == "add" else "~"
        return f"{sign} {data['id']} {data['ip']}:{data['port']} {data['status']}" + (
            f" (failing: {_failing(data['checks'])})" if data["status"] != "passing" else "")
    if kind == "summary" and "zone" in data:
        failover = data.get("failover")
        where = (f"{data['zone']} answers in place of {failover['from']}: {failover['reason']}"
                 if failover else f"{data['zone']} answers")
        return f"summary: {where}" + ("; panic: DNS answers every instance"
                                      if data.get("panic") else "")
    if kind == "unavailable" and data.get("status") == 404:
        return f"not there (yet): {data.get('error')}; waiting for it"
    return f"{kind}: {json.dumps(data)}"


def cmd_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    ``glimpse watch ADDRESS``: print the instances, then each change, until
    the agent closes the stream, ``--count`` events came, or the user
    interrupts.

    :raises Unreachable: when the agent cannot be asked.
    """
    url = f"{args.agent}/v1/watch/{quote_segment(args.address)}{_query(args)}"
    req = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
    try:
        response = urllib.request.urlopen(req, timeout=args.timeout)
    except urllib.error.HTTPError as e:
        try:
            print_error(e.code, json.loads(e.read()), err)
        except ValueError:
            err.write(f"glimpse: HTTP {e.code}\n")
        return exit_code(e.code)
    except (urllib.error.URLError, OSError) as e:
        raise Unreachable(
            f"cannot reach the Glimpse agent at {url}: {getattr(e, 'reason', e)}") from e
    seen = 0
    with response:
        for kind, event_id, data in sse_events(response):
            if args.json:
                out.write(json.dumps({"event": kind, "id": event_id, "data": data},
                                     sort_keys=True) + "\n")
            else:
                out.write(_describe(kind, data) + "\n")
            out.flush()
            seen += 1
            if kind == "close" or (args.count and seen >= args.count):
                break
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    """
    The argument parser, with every subcommand's help.
    """
    def options(parser: argparse.ArgumentParser, default: bool) -> None:
        # Accepted before and after the subcommand; after wins.
        parser.add_argument("--agent", default=DEFAULT_AGENT if default else argparse.SUPPRESS,
                            metavar="URL",
                            help=f"the Glimpse agent's HTTP API (default {DEFAULT_AGENT})")
        parser.add_argument("--json", action="store_true",
                            default=False if default else argparse.SUPPRESS,
                            help="print the agent's JSON answer instead of a table")

    common = argparse.ArgumentParser(add_help=False)
    options(common, False)
    p = argparse.ArgumentParser(
        prog="glimpse", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Ask the local Glimpse agent about the service topology. Addresses are "
                    "<service>.<job>.<env>.<product>.<zone>, e.g. http.web.prod.shop.ams.")
    options(p, True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        s.set_defaults(func=func)
        return s

    s = add("lookup", cmd_lookup, "Every instance of an address with its health; labels but "
            "the zone may be '*'. Exit 1 when there is none.")
    s.add_argument("address", metavar="ADDRESS",
                   help="e.g. http.web.prod.shop.ams; zone 'any': the local zone, or the one "
                        "it fails over to")
    s.add_argument("--healthy", action="store_true",
                   help="only the healthy instances")
    s.add_argument("--meta", action="append", type=meta_pair, metavar="KEY=VALUE",
                   help="only instances whose meta has KEY=VALUE (repeatable: all must match), "
                        "e.g. --meta version=1.4.2")
    s = add("topology", cmd_topology, "The topology below PATH with counts of instances "
            "passing / warning / critical.")
    s.add_argument("path", metavar="PATH", nargs="?", default="",
                   help="zone[/product[/env[/job]]] (default: every zone)")
    s = add("watch", cmd_watch, "Follow an address: print its instances, then each change "
            "(an address that does not exist yet is waited for).")
    s.add_argument("address", metavar="ADDRESS", help="e.g. http.web.prod.shop.ams")
    s.add_argument("--healthy", action="store_true", help="only the healthy instances")
    s.add_argument("--meta", action="append", type=meta_pair, metavar="KEY=VALUE",
                   help="only instances whose meta has KEY=VALUE (repeatable); one that "
                        "stops matching is a remove event")
    s.add_argument("--count", type=int, default=0, metavar="N",
                   help="exit after N events (default: follow until interrupted)")
    s.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up when the agent sends nothing, not even a heartbeat, this long")
    s = add("explain", cmd_explain, "Each registered instance of an address, whether it is in "
            "DNS answers, and the rule that decided.")
    s.add_argument("address", metavar="ADDRESS", help="e.g. http.web.prod.shop.ams")
    s = add("provide", cmd_provide, "Make STATE.json the provider's whole state on this host "
            "(PUT /v1/providers/NAME; with --config-dir, through the Consul agent's "
            "config directory instead).")
    s.add_argument("state", metavar="STATE.json", nargs="?", default="-",
                   help="the provider state (JSON); - or nothing reads standard input")
    s.add_argument("--provider", required=True, metavar="NAME",
                   help="the provider's name (a DNS label)")
    s.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    s.add_argument("--token-file", metavar="PATH",
                   help="file with the agent's provider token (--provider-token-file)")
    s.add_argument("--config-dir", metavar="DIR",
                   help="write the state into this Consul agent config directory and reload "
                        "the agent, without a Glimpse agent")
    s.add_argument("--consul", default="http://127.0.0.1:8500", metavar="URL",
                   help="the Consul agent to reload with --config-dir (default %(default)s)")
    s.add_argument("--consul-token-file", metavar="PATH",
                   help="file with the Consul ACL token for the reload (--config-dir)")
    s.add_argument("--consul-ca", metavar="PATH",
                   help="PEM of the CA of an https:// --consul (--config-dir)")
    s.add_argument("--consul-cert", metavar="PATH",
                   help="PEM of the client certificate for a --consul with verify_incoming "
                        "(--config-dir; with --consul-key)")
    s.add_argument("--consul-key", metavar="PATH",
                   help="PEM of the private key of --consul-cert")
    add("status", cmd_status, "Glimpse's own health: serving, zones and views' ages. "
        "Exit 1 when it cannot serve.")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """
    Run the CLI; returns the exit code (the console script exits with it).

    :param argv: the arguments, default ``sys.argv[1:]``.
    :param out: standard output, default :obj:`sys.stdout`.
    :param err: standard error, default :obj:`sys.stderr`.
    """
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    args.agent = args.agent.rstrip("/")
    try:
        return args.func(args, out, err)
    except Unreachable as e:
        err.write(f"glimpse: {e}\n")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_OK


def run() -> NoReturn:
    """
    The console script's entry point: exit with :obj:`main`'s code.
    """
    sys.exit(main())


if __name__ == "__main__":
    run()
