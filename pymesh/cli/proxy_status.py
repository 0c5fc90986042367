"""``pymesh proxy-status [PROXY] [-o json]``: is every proxy on pilot's latest config?

Like ``istioctl proxy-status``: per proxy and type SYNCED (the proxy ACKed the last response),
STALE (sent, not ACKed yet, or rejected) or NOT SENT; the message of a rejection (NACK) is
printed under the table."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded
from pymesh.cli.tables import render_table
from pymesh.errors import ControlPlaneError

__all__ = ["add_arguments", "proxy_name", "run"]

_TYPES = ("CDS", "LDS", "EDS", "RDS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proxy", nargs="?", help="one proxy: id, pod.namespace, pod or IP")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_pilot_arguments(parser)


def proxy_name(proxy_id: str) -> str:
    """``sidecar~10.0.0.1~reviews-v1-1.default~default.svc.cluster.local`` ->
    ``reviews-v1-1.default`` (istioctl's NAME column)."""
    parts = proxy_id.split("~")
    return parts[2] if len(parts) == 4 else proxy_id


def _matches(item: dict[str, Any], wanted: str) -> bool:
    return wanted in (item["id"], proxy_name(item["id"]), proxy_name(item["id"]).split(".")[0])


def _cell(state: dict[str, Any]) -> str:
    return f"{state['status']} (rejected)" if "error" in state else str(state["status"])


def _run(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    _, data = client.call("GET", "/proxies")
    proxies = data.get("proxies", [])
    if args.proxy:
        proxies = [p for p in proxies if _matches(p, args.proxy)]
        if not proxies:
            raise ControlPlaneError(f"proxy {args.proxy!r} is not connected to pilot")
    if args.output == "json":
        print(json.dumps({**data, "proxies": proxies}, indent=2))
        return 0
    if not proxies:
        print("No proxies connected.")
        return 0
    pilot = client.base.split("://", 1)[-1]
    rows = [
        (
            proxy_name(p["id"]),
            p.get("cluster", ""),
            *(_cell(p["types"].get(t, {"status": "NOT SENT"})) for t in _TYPES),
            pilot,
            (p.get("version") or "")[:12],
        )
        for p in proxies
    ]
    print(render_table(("NAME", "CLUSTER", *_TYPES, "PILOT", "VERSION"), rows))
    errors = [(proxy_name(p["id"]), t, m) for p in proxies for t, m in p.get("errors", {}).items()]
    if errors:
        print()
        for name, type_name, message in errors:
            print(f"{name}: {type_name} rejected: {message}")
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
