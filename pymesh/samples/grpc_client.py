"""The echo app's gRPC client, run in a pod with ``pymesh exec``: ``python -m
pymesh.samples.grpc_client echo.echo-grpc:7070 [--count N] [--message TEXT]``.

In process mode the pod's sidecar is its ``HTTP_PROXY``: the client speaks HTTP/2 to that
proxy with the service as ``:authority``, as a sidecar-captured client's connection would
arrive (grpcio's own proxy support would tunnel with CONNECT instead, hiding the calls from
the mesh). In netns mode iptables takes the connection to the sidecar anyway. Each answer is
printed, followed by a blank line; a failed call prints its gRPC status and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import grpc

from pymesh.proto import echo_pb2, echo_pb2_grpc

__all__ = ["channel_for", "main"]


def channel_for(target: str, proxy: str | None) -> grpc.Channel:
    """A plaintext channel to ``target`` (``host:port``), through ``proxy`` (a URL) if set."""
    options = [("grpc.enable_http_proxy", 0)]
    if not proxy:
        return grpc.insecure_channel(target, options=options)
    parts = urlsplit(proxy if "//" in proxy else f"http://{proxy}")
    address = f"{parts.hostname}:{parts.port or 80}"
    return grpc.insecure_channel(address, options=[*options, ("grpc.default_authority", target)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpc-client", description=__doc__)
    parser.add_argument("target", help="host:port of the echo service, e.g. echo.echo-grpc:7070")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--message", default="hello")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each call (s)")
    args = parser.parse_args(argv)
    proxy = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY")
    with channel_for(args.target, proxy) as channel:
        stub = echo_pb2_grpc.EchoTestServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(args.count):
            try:
                reply = stub.Echo(echo_pb2.EchoRequest(message=args.message), timeout=args.timeout)
            except grpc.RpcError as error:
                print(f"{error.code().name}: {error.details()}", file=sys.stderr)
                return 1
            print(reply.message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
