"""A stand-in for Istio's ``tcp-echo-server`` (the authz-tcp task's app): it listens on each
of its ports and answers every line a client sends with ``<prefix> <line>``.

``python -m pymesh.samples.tcp_echo --host H --port P [-- PORTS [PREFIX]]``: the positional
arguments are the sample image's own (``"9000,9001,9002" "hello"`` in tcp-echo.yaml,
``"one"``/``"two"`` as the prefix of the traffic-shifting task's two versions).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

__all__ = ["main", "serve"]


async def _echo(prefix: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(prefix + b" " + line)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(host: str, ports: Sequence[int], prefix: str, stop: asyncio.Event) -> None:
    """Serve every port until ``stop`` is set."""
    answer = prefix.encode()
    servers = [
        await asyncio.start_server(lambda r, w: _echo(answer, r, w), host, port) for port in ports
    ]
    await stop.wait()
    for server in servers:
        server.close()
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcp-echo", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9000, help="the container port")
    parser.add_argument("ports", nargs="?", default="9000,9001,9002", help="every port it serves")
    parser.add_argument("prefix", nargs="?", default="hello")
    args = parser.parse_args(argv)
    ports = sorted({args.port, *(int(p) for p in args.ports.split(",") if p)})

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.host, ports, args.prefix, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
