"""``pymesh get KIND [NAME...] [-n NS | -A] [-l SELECTOR] [-o wide|yaml|json|name|jsonpath=T]``.

As kubectl: the namespace is ``default`` unless ``-n`` or ``-A`` says otherwise, the table
has kubectl's columns for the kind (``-o wide`` adds some), and ``-o name`` / ``-o jsonpath``
serve scripts (``pymesh get pods -l app=fortio -o 'jsonpath={.items[0].metadata.name}'``).
Pods are the running demo's; every other kind is the configuration pilot runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from pymesh.cli.context import require_demo, running_demo
from pymesh.cli.jsonpath import render
from pymesh.cli.objects import columns, pod_object
from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded
from pymesh.cli.tables import render_table
from pymesh.config.kinds import KINDS, kind_alias, resource_name
from pymesh.demo.state import PodState
from pymesh.errors import ControlPlaneError, ValidationError

__all__ = ["add_arguments", "run", "select"]

_OUTPUTS = ("wide", "yaml", "json", "name", "jsonpath=TEMPLATE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", help="pods, services, deployments, namespaces, virtualservices (vs), ..."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these objects")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="the namespace (default: default)")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="objects of every namespace"
    )
    parser.add_argument("-l", "--selector", help="label selector: app=reviews,version!=v1")
    parser.add_argument("-o", "--output", help=f"{' | '.join(_OUTPUTS)} (default: a table)")
    parser.add_argument("--show-labels", action="store_true", help="a LABELS column")
    add_pilot_arguments(parser)


def select(labels: dict[str, str], selector: str) -> bool:
    """kubectl's equality-based selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _namespaced(kind: str) -> bool:
    return next((i.namespaced for i in KINDS.values() if i.kind == kind), True)


def _pods(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[PodState]]:
    """Pods exist while a demo runs them."""
    pods = list(require_demo(args).state.pods)
    return [pod_object(p) for p in pods], pods


def _config(args: argparse.Namespace, kind: str) -> list[dict[str, Any]]:
    _, data = client_from_args(args).call("GET", "/resources", query={"kind": kind})
    items: list[dict[str, Any]] = list(data.get("items", []))
    if kind != "Namespace":
        return items
    # Every namespace something lives in exists, as in a cluster.
    _, everything = client_from_args(args).call("GET", "/resources")
    known = {i["metadata"]["name"] for i in items}
    used = {
        str(i["metadata"].get("namespace"))
        for i in everything.get("items", [])
        if i["metadata"].get("namespace")
    }
    for name in sorted(used - known):
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return items


def _objects(args: argparse.Namespace, kind: str) -> tuple[list[dict[str, Any]], list[PodState]]:
    demo_pods: list[PodState] = []
    if kind == "Pod":
        items, demo_pods = _pods(args)
    else:
        items = _config(args, kind)
        demo = running_demo(args) if kind == "Deployment" else None
        demo_pods = list(demo.state.pods) if demo is not None else []
    if _namespaced(kind) and not args.all_namespaces:
        wanted = args.namespace or "default"
        items = [i for i in items if (i["metadata"].get("namespace") or "default") == wanted]
    if args.selector:
        items = [i for i in items if select(i["metadata"].get("labels") or {}, args.selector)]
    if args.names:
        by_name = {i["metadata"]["name"]: i for i in items}
        missing = [n for n in args.names if n not in by_name]
        if missing:
            where = ""
            if _namespaced(kind) and not args.all_namespaces:
                where = f" in namespace {args.namespace or 'default'}"
            raise ControlPlaneError(
                "; ".join(f'{resource_name(kind)} "{n}" not found{where}' for n in missing)
            )
        items = [by_name[n] for n in args.names]
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:  # each object once, whatever reported it twice
        unique[(str(item["metadata"].get("namespace", "")), item["metadata"]["name"])] = item
    return list(unique.values()), demo_pods


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _document(items: list[dict[str, Any]], single: bool) -> Any:
    cleaned = [_clean(i) for i in items]
    if single and len(cleaned) == 1:
        return cleaned[0]
    return {"apiVersion": "v1", "kind": "List", "items": cleaned}


def _table(
    kind: str, items: list[dict[str, Any]], pods: list[PodState], args: argparse.Namespace
) -> str:
    header, row = columns(kind, pods, args.output == "wide")
    all_ns = args.all_namespaces and _namespaced(kind)
    head = (("NAMESPACE",) if all_ns else ()) + ("NAME", *header)
    rows = []
    for item in items:
        meta = item["metadata"]
        cells = ((meta.get("namespace", ""),) if all_ns else ()) + (meta["name"], *row(item))
        if args.show_labels:
            labels = meta.get("labels") or {}
            cells += (",".join(f"{k}={v}" for k, v in labels.items()) or "<none>",)
        rows.append(cells)
    if args.show_labels:
        head += ("LABELS",)
    return render_table(head, rows)


def _run(args: argparse.Namespace) -> int:
    kind = kind_alias(args.kind)
    if kind is None:
        raise ValidationError(f'the server doesn\'t have a resource type "{args.kind}"')
    output = args.output or ""
    if (
        output
        and output not in ("wide", "yaml", "json", "name")
        and not output.startswith("jsonpath=")
    ):
        raise ValidationError(f"unknown output format {output!r}: use {', '.join(_OUTPUTS)}")
    items, pods = _objects(args, kind)
    single = len(args.names) == 1
    if output == "json":
        print(json.dumps(_document(items, single), indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(_document(items, single), sort_keys=False), end="")
    elif output == "name":
        for item in items:
            print(f"{resource_name(kind, singular=True)}/{item['metadata']['name']}")
    elif output.startswith("jsonpath="):
        print(render(output.removeprefix("jsonpath="), _document(items, single)), end="")
    elif not items:
        where = "" if args.all_namespaces or not _namespaced(kind) else args.namespace or "default"
        found = f"No resources found in {where} namespace." if where else "No resources found"
        print(found, file=sys.stderr)
    else:
        print(_table(kind, items, pods, args))
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
