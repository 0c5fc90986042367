"""``pymesh delete -f FILE|DIR|-`` or ``pymesh delete KIND NAME [-n NAMESPACE]``.

Only objects stored by ``pymesh apply`` can be deleted; one defined in a file of the user's
own is refused with the name of that file (it is theirs to edit)."""

from __future__ import annotations

import argparse
import sys
import urllib.parse

from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded, read_inputs
from pymesh.config.kinds import resource_name
from pymesh.errors import ControlPlaneError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="kind (vs, virtualservice, dr, ...)")
    parser.add_argument("names", nargs="*", help="object names")
    parser.add_argument("-f", "--filename", action="append", help="file, directory or -")
    parser.add_argument(
        "-n", "--namespace", help="namespace of NAME, or of -f objects that name none (default)"
    )
    add_pilot_arguments(parser)


def _report(changes: list[dict[str, object]]) -> int:
    """kubectl's lines, worded as ``apply`` and ``get`` word them, one per object."""
    failed = 0
    last = {(str(c["kind"]), c.get("namespace") or "", str(c["name"])): c for c in changes}
    for c in last.values():
        kind, name, ns = str(c["kind"]), c["name"], c.get("namespace") or ""
        action = c["action"]
        if action == "deleted":
            note = f" ({c['message']})" if c.get("message") else ""
            print(f'{resource_name(kind, singular=True)} "{name}" deleted{note}')
        elif action == "not found":
            failed += 1
            where = f" in namespace {ns}" if ns else ""
            print(f'error: {resource_name(kind)} "{name}" not found{where}', file=sys.stderr)
        else:
            failed += 1
            print(
                f'error: {resource_name(kind)} "{name}": {c.get("message", action)}',
                file=sys.stderr,
            )
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    ok = (200, 404, 409)
    if args.filename:
        if args.kind:
            raise ControlPlaneError("give either -f or KIND NAME, not both")
        inputs = read_inputs(args.filename)
        body = "\n---\n".join(text for _, text in inputs)
        source = inputs[0][0] if len(inputs) == 1 else "<delete>"
        query = {"source": source}
        if args.namespace:
            query["namespace"] = args.namespace
        _, data = client.call("DELETE", "/resources", query=query, body=body.encode(), ok=ok)
        return _report(data.get("changes", []))
    if not args.kind or not args.names:
        raise ControlPlaneError("delete needs -f FILE or KIND NAME")
    rc = 0
    for name in args.names:
        parts = (args.kind, args.namespace or "default", name)
        path = "/".join(urllib.parse.quote(p, safe="") for p in parts)
        _, data = client.call("DELETE", f"/resources/{path}", ok=ok)
        rc |= _report(data.get("changes", []))
    return rc


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
