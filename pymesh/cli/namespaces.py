"""``pymesh create namespace NS`` and ``pymesh label namespace NS KEY=VALUE|KEY- ...``, as
kubectl does them: a Namespace object in pilot's configuration, whose ``istio-injection``
label decides whether the demo's pods in it get a sidecar."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import yaml

from pymesh.cli.pilot_client import PilotClient, add_pilot_arguments, client_from_args, guarded
from pymesh.errors import ControlPlaneError

__all__ = [
    "add_create_arguments",
    "add_label_arguments",
    "label_changes",
    "run_create",
    "run_label",
]

_KINDS = ("namespace", "namespaces", "ns")
_LABEL = re.compile(r"^(?:[a-z0-9A-Z.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(|[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


def _check_kind(kind: str) -> None:
    if kind.lower() not in _KINDS:
        raise ControlPlaneError(f'pymesh handles only namespaces here, not "{kind}"')


def _namespace(client: PilotClient, name: str) -> dict[str, Any] | None:
    status, data = client.call(
        "GET", "/resources", query={"kind": "Namespace", "name": name}, ok=(200, 404)
    )
    items = data.get("items") or [] if status == 200 else []
    item = items[0] if items else None
    if item is None:
        return None
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _apply(client: PilotClient, obj: dict[str, Any], source: str) -> None:
    body = yaml.safe_dump(obj, sort_keys=False).encode()
    client.call("POST", "/apply", query={"source": source}, body=body)


def label_changes(labels: dict[str, str], changes: list[str], *, overwrite: bool) -> dict[str, str]:
    """kubectl's ``label`` on a label map: ``k=v`` sets (an existing, different value only
    with ``--overwrite``), ``k-`` removes. ValueError says what is wrong."""
    out = dict(labels)
    for change in changes:
        if change.endswith("-") and "=" not in change:
            out.pop(change[:-1], None)
            continue
        key, eq, value = change.partition("=")
        if not eq or not _LABEL.match(key) or not _VALUE.match(value):
            raise ValueError(f"invalid label spec: {change}")
        if key in out and out[key] != value and not overwrite:
            raise ValueError(f"'{key}' already has a value ({out[key]}), and --overwrite is false")
        out[key] = value
    return out


def add_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", metavar="namespace", help="what to create: namespace")
    parser.add_argument("name", help="the namespace's name")
    add_pilot_arguments(parser)


def _create(args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    client = client_from_args(args)
    if _namespace(client, args.name) is not None:
        print(
            f'Error from server (AlreadyExists): namespaces "{args.name}" already exists',
            file=sys.stderr,
        )
        return 1
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.name}}
    _apply(client, obj, "<create namespace>")
    print(f"namespace/{args.name} created")
    return 0


def run_create(args: argparse.Namespace) -> int:
    return guarded(_create, args)


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", metavar="namespace", help="what to label: namespace")
    parser.add_argument("name", help="the namespace's name")
    parser.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-", help="labels to change")
    parser.add_argument("--overwrite", action="store_true", help="replace existing values")
    add_pilot_arguments(parser)


def _label(args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    client = client_from_args(args)
    obj = _namespace(client, args.name)
    if obj is None:
        print(f'Error from server (NotFound): namespaces "{args.name}" not found', file=sys.stderr)
        return 1
    metadata = obj.setdefault("metadata", {})
    before = dict(metadata.get("labels") or {})
    try:
        after = label_changes(before, args.labels, overwrite=args.overwrite)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if after == before:
        print(f"namespace/{args.name} not labeled")
        return 0
    metadata["labels"] = after
    _apply(client, obj, "<label namespace>")
    print(f"namespace/{args.name} labeled")
    return 0


def run_label(args: argparse.Namespace) -> int:
    return guarded(_label, args)
