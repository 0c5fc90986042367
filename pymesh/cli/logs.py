"""``pymesh logs WORKLOAD [--status 5xx] [--since 5m]``: the recent access log mixer keeps,
as the workload's sidecar reported it (like ``kubectl logs POD -c istio-proxy``), oldest
first, one line per request in the shape of Istio's default access-log format."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pymesh.cli.mixer_client import add_mixer_arguments, get_json
from pymesh.cli.pilot_client import guarded

__all__ = ["add_arguments", "format_entry", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", help="workload name, or name.namespace (reviews-v1.default)")
    parser.add_argument("--status", default="", help="a code (503) or a class (5xx)")
    parser.add_argument("--since", default="", help="only newer entries: 30s, 5m")
    parser.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_mixer_arguments(parser)


def _time(ts: float) -> str:
    ms = int((ts % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


def format_entry(e: dict[str, Any]) -> str:
    """``[START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS BYTES_RECEIVED BYTES_SENT
    DURATION "AUTHORITY" "UPSTREAM_HOST" UPSTREAM_CLUSTER REPORTER PEER``."""
    peer = e["destination_workload"] if e["reporter"] == "source" else e["source_workload"]
    return (
        f'[{_time(e["start_time"])}] "{e["method"] or "-"} {e["path"] or "-"} '
        f'{e["protocol"].upper()}" {e["response_code"]} {e["response_flags"]} '
        f"{e['response_code_details'] or '-'} {e['bytes_received']} {e['bytes_sent']} "
        f'{round(e["duration"])} "{e["authority"] or "-"}" "{e["upstream_host"] or "-"}" '
        f"{e['upstream_cluster'] or '-'} {e['reporter']} {peer}"
    )


def _run(args: argparse.Namespace) -> int:
    params = {"workload": args.workload, "limit": str(args.limit)}
    if args.status:
        params["status"] = args.status
    if args.since:
        params["since"] = args.since
    entries = get_json(args.mixer, "/api/logs", params)
    entries.reverse()  # mixer answers newest first; a log reads oldest first
    if args.output == "json":
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        print(format_entry(e))
    return 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
