"""``pymesh explain SOURCE URL [-H 'name: value']...``: which route, cluster and endpoints a
request from SOURCE (a connected proxy: id, pod.namespace, pod name or IP) would take."""

from __future__ import annotations

import argparse
import json

import yaml

from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded
from pymesh.errors import ControlPlaneError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="the proxy the request leaves from")
    parser.add_argument("url", help="http://reviews:9080/reviews/0")
    parser.add_argument(
        "-H", "--header", action="append", default=[], help="request header 'name: value'"
    )
    parser.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    add_pilot_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    query: list[tuple[str, str]] = [("source", args.source), ("url", args.url)]
    for h in args.header:
        if ":" not in h:
            raise ControlPlaneError(f"header {h!r} is not 'name: value'")
        query.append(("header", h))
    _, data = client_from_args(args).call("GET", "/explain", query=query)
    if args.output == "json":
        print(json.dumps(data, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        print(f"{'proxy':16} {data.get('proxy')}")
        print(str(data.get("text", "")).rstrip())
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
