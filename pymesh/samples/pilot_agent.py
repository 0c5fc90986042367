"""A stand-in for the part of Istio's ``pilot-agent`` that tasks type inside the
``istio-proxy`` container: ``pilot-agent request METHOD PATH [BODY]`` sends one request to the
sidecar's admin interface and prints the answer (the circuit-breaking task reads
``pilot-agent request GET stats`` this way).

The admin is at ``INSTANCE_IP:15000`` (what ``pymesh exec`` sets for a pod), or
``--address HOST:PORT``.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

__all__ = ["main"]

_ADMIN_PORT = 15000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pilot-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="{request}")
    sub.required = True
    request = sub.add_parser("request", help="send a request to the local Envoy's admin")
    request.add_argument("method", choices=("GET", "POST"), type=str.upper)
    request.add_argument("path", help="stats, clusters, config_dump, ...")
    request.add_argument("body", nargs="?", default="")
    request.add_argument("--address", help="the admin's HOST:PORT (INSTANCE_IP:15000)")
    args = parser.parse_args(argv)
    address = args.address or f"{os.environ.get('INSTANCE_IP', '127.0.0.1')}:{_ADMIN_PORT}"
    url = f"http://{address}/{args.path.lstrip('/')}"
    data = args.body.encode() if args.method == "POST" else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(
            urllib.request.Request(url, data=data, method=args.method), timeout=10
        ) as r:
            sys.stdout.buffer.write(r.read())
    except urllib.error.HTTPError as exc:
        sys.stdout.buffer.write(exc.read())
        print(f"error: {url}: HTTP {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach the proxy's admin at {address}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
