"""
``glimpse provide``: make a file the provider's whole state, through the
agent's HTTP API or, with ``--config-dir``, the Consul agent's config
directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from glimpse.cli.client import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    fetch,
    print_json,
    quote_segment,
)
from glimpse.config import read_secret


def cmd_provide(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    ``glimpse provide --provider NAME [STATE.json]``: make the file the
    provider's whole state on this host, through the agent's HTTP API or,
    with ``--config-dir``, the Consul agent's config directory.
    """
    try:
        if args.state == "-":
            document = json.load(sys.stdin)
        else:
            with open(args.state, encoding="utf-8") as f:
                document = json.load(f)
    except (OSError, ValueError) as e:
        err.write(f"glimpse: cannot read the state {args.state}: {e}\n")
        return EXIT_USAGE
    if args.config_dir:
        return _provide_file(args, document, out, err)
    headers: dict[str, str] = {}
    if args.token_file:
        try:
            headers["Authorization"] = "Bearer " + (read_secret(args.token_file) or "")
        except OSError as e:
            err.write(f"glimpse: cannot read --token-file: {e}\n")
            return EXIT_USAGE
    url = f"{args.agent}/v1/providers/{quote_segment(args.provider)}"
    if args.dry_run:
        url += "?dry_run=true"
    body, code = fetch("PUT", url, err, document, headers, failed=EXIT_REFUSED)
    if body is None:
        return code
    if args.json:
        print_json(body, out)
    else:
        verb = "would change" if body.get("dry_run") else "applied"
        out.write(f"{verb}: {len(body['added'])} added, {len(body['changed'])} changed, "
                  f"{len(body['removed'])} removed, {len(body['unchanged'])} unchanged\n")
        for kind in ("added", "changed", "removed"):
            for name in body[kind]:
                out.write(f"  {kind[0] if kind != 'changed' else '~'} {name}\n")
    return EXIT_OK


def _provide_file(args: argparse.Namespace, document: Any, out: TextIO, err: TextIO) -> int:
    if (args.consul_cert is None) != (args.consul_key is None):
        err.write("glimpse: --consul-cert and --consul-key go together (the client "
                  "certificate and its private key)\n")
        return EXIT_USAGE
    from glimpse.providers.files import FileProviderError, provide_to_config_dir
    from glimpse.providers.state import InvalidState
    try:
        token = read_secret(args.consul_token_file)
        result = provide_to_config_dir(args.provider, document, args.config_dir, args.consul,
                                       token=token, ca=args.consul_ca,
                                       cert=args.consul_cert, key=args.consul_key)
    except OSError as e:
        err.write(f"glimpse: cannot read --consul-token-file: {e}\n")
        return EXIT_USAGE
    except InvalidState as e:
        err.write("glimpse: invalid provider state; nothing was changed\n")
        for problem in e.to_json():
            err.write(f"  {problem['path']}: {problem['problem']}\n")
        return EXIT_REFUSED
    except FileProviderError as e:
        err.write(f"glimpse: {e}\n")
        # 1 for a failed write or reload, as main's epilog says.
        return EXIT_UNREACHABLE if e.unreachable else EXIT_NOT_FOUND
    out.write(result.message + "\n")
    return EXIT_OK
