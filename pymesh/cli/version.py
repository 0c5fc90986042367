"""``pymesh version [--client] [-o json]`` (and ``pymesh --version``): this client's version,
pilot's, and those the connected proxies report, as ``istioctl version`` prints them.

Only the client's version needs nothing else: when pilot cannot be reached the other lines
say why, and the exit status stays 0, as istioctl's does."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from pymesh import __version__
from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args
from pymesh.errors import PymeshError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client", action="store_true", help="only this client's version")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_pilot_arguments(parser)


def run(args: argparse.Namespace) -> int:
    versions: dict[str, object] = {"client": __version__}
    problem = ""
    if not args.client:
        try:
            client = client_from_args(args)
            _, pilot = client.call("GET", "/version")
            versions["control_plane"] = pilot.get("version", "unknown")
            _, data = client.call("GET", "/proxies")
            agents = Counter(
                str(p.get("agent") or "unknown").rpartition("/")[2] or "unknown"
                for p in data.get("proxies", [])
            )
            versions["data_plane"] = dict(sorted(agents.items()))
        except PymeshError as exc:
            problem = str(exc)
    if args.output == "json":
        print(json.dumps({**versions, **({"error": problem} if problem else {})}, indent=2))
        return 0
    print(f"client version: {__version__}")
    if args.client:
        return 0
    if problem:
        print(f"control plane version: unknown ({problem})")
        return 0
    print(f"control plane version: {versions['control_plane']}")
    data_plane = versions["data_plane"]
    assert isinstance(data_plane, dict)
    if not data_plane:
        print("data plane version: none (no proxies connected)")
    for version, count in data_plane.items():
        print(f"data plane version: {version} ({count} {'proxy' if count == 1 else 'proxies'})")
    return 0
