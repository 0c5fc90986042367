"""``pymesh get KIND [NAME] [-n NAMESPACE] [-o yaml|json]``: the configuration pilot runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded
from pymesh.cli.tables import render_table

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="kind: virtualservices (vs), destinationrules (dr), ...")
    parser.add_argument("name", nargs="?", help="one object by name")
    parser.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    parser.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    add_pilot_arguments(parser)


def _summary(item: dict[str, Any]) -> str:
    spec = item.get("spec") or {}
    kind = item["kind"]
    if kind == "VirtualService":
        gateways = ",".join(spec.get("gateways", [])) or "mesh"
        return f"gateways={gateways} hosts={','.join(spec.get('hosts', []))}"
    if kind == "DestinationRule":
        subsets = ",".join(s.get("name", "") for s in spec.get("subsets", []))
        return f"host={spec.get('host', '')}" + (f" subsets={subsets}" if subsets else "")
    if kind == "ServiceEntry":
        return f"hosts={','.join(spec.get('hosts', []))}"
    if kind == "Service":
        ports = ",".join(str(p.get("port")) for p in spec.get("ports", []))
        return f"ports={ports}"
    return ""


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _run(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    query = {"kind": args.kind}
    if args.name:
        query["name"] = args.name
    if args.namespace:
        query["namespace"] = args.namespace
    _, data = client.call("GET", "/resources", query=query)
    items = [_clean(i) for i in data.get("items", [])]
    sources = [i.get("_source") or "" for i in data.get("items", [])]
    if args.output == "json":
        doc = (
            items[0]
            if args.name and len(items) == 1
            else {"apiVersion": "v1", "kind": "List", "items": items}
        )
        print(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        doc = (
            items[0]
            if args.name and len(items) == 1
            else {"apiVersion": "v1", "kind": "List", "items": items}
        )
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    elif not items:
        print("No resources found.")
    else:
        rows = [
            (i["metadata"].get("namespace", ""), i["metadata"]["name"], _summary(i), src)
            for i, src in zip(items, sources, strict=True)
        ]
        print(render_table(("NAMESPACE", "NAME", "SUMMARY", "SOURCE"), rows))
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
