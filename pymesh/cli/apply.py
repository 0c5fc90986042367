"""``pymesh apply -f FILE|DIR|-``: validate locally, then store through pilot (like
``kubectl apply``). Pilot answers once the files are written and the new configuration is
built; proxies get it with the next (debounced) push."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded, read_inputs
from pymesh.errors import ValidationError

__all__ = ["add_arguments", "object_ref", "report", "run", "validate_inputs"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a YAML/JSON file, a directory of them, or - for stdin (repeatable)",
    )
    parser.add_argument(
        "-n", "--namespace", help="namespace of the objects that name none (kubectl's -n)"
    )
    parser.add_argument(
        "--dry-run",
        nargs="?",
        const="client",
        default="none",
        choices=("none", "client", "server"),
        help="client: only validate here; server: pilot validates and builds, stores nothing",
    )
    add_pilot_arguments(parser)


def object_ref(kind: str, api_version: str, name: str) -> str:
    """``virtualservice.networking.istio.io/reviews``, ``service/reviews`` (kubectl's form)."""
    group = api_version.rpartition("/")[0]
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


def validate_inputs(
    inputs: list[tuple[str, str]], namespace: str | None = None
) -> list[dict[str, str]]:
    """Load each input with the same loader pilot uses, so that errors name the file; the
    objects found, as pilot's changes name them."""
    from pymesh.config import load_documents

    found = []
    for source, text in inputs:
        result = load_documents(text, source, default_namespace=namespace or "default")
        if not result.resources and not result.skipped:
            raise ValidationError("no objects found", source=source)
        found += [
            {"kind": r.kind, "apiVersion": r.api_version, "namespace": r.namespace, "name": r.name}
            for r in result.resources
        ]
    return found


def report(changes: list[dict[str, Any]], suffix: str = "") -> None:
    """kubectl's lines, one per object (the last word on an object named twice wins)."""
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for change in changes:
        last[(change["kind"], change.get("namespace") or "", change["name"])] = change
    for change in last.values():
        ref = object_ref(change["kind"], change.get("apiVersion", ""), change["name"])
        note = f" ({change['message']})" if change.get("message") else ""
        # kubectl's form: warnings on stderr, before the line for the object.
        for warning in change.get("warnings", ()):
            print(f"Warning: {ref}: {warning}", file=sys.stderr, flush=True)
        print(f"{ref} {change['action']}{note}{suffix}")
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    inputs = read_inputs(args.filename)
    found = validate_inputs(inputs, args.namespace)
    if args.dry_run == "client":
        report([{**obj, "action": "created"} for obj in found], " (dry run)")
        return 0
    client = client_from_args(args)
    source = inputs[0][0] if len(inputs) == 1 else "<apply>"
    body = "\n---\n".join(text for _, text in inputs)
    query = {"source": source}
    if args.namespace:
        query["namespace"] = args.namespace
    if args.dry_run == "server":
        query["dryRun"] = "All"
    _, data = client.call("POST", "/apply", query=query, body=body.encode())
    report(data.get("changes", []), " (server dry run)" if args.dry_run == "server" else "")
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
