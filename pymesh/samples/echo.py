"""A stand-in for Istio's echo test app (``registry.istio.io/testing/app``, the grpc-echo
sample): HTTP on each ``--port``, gRPC (``pymesh.echo.EchoTestService``) on each ``--grpc``,
and a line echo on each ``--tcp``. Every answer is Istio's echo text, one ``Key=value`` line
per fact: the serving version, port and hostname, then each request header or gRPC metadata
entry as ``RequestHeader=name:value``, so a caller sees what its path through the mesh added
(``x-forwarded-client-cert`` when the server's sidecar terminated mutual TLS).

``python -m pymesh.samples.echo --host H --port P [--container-port C] -- IMAGE-ARGS``: the
image's own arguments follow ``--`` unchanged (``--port 18080 --grpc 17070 --version v1``...).
The demo passes ``--port``/``--container-port`` when the pod's sidecar owns ``H:C``: the app
serves container port C on P instead, behind the sidecar.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
from aiohttp import web

from pymesh.proto import echo_pb2, echo_pb2_grpc

__all__ = ["EchoConfig", "echo_text", "main", "serve"]


@dataclass(frozen=True, slots=True)
class EchoConfig:
    host: str
    version: str
    hostname: str
    http: tuple[int, ...] = ()
    grpc: tuple[int, ...] = ()
    tcp: tuple[int, ...] = ()
    #: container port -> the port it is served on (the demo's sidecar owns the container port)
    moved: tuple[tuple[int, int], ...] = ()

    def bind(self, port: int) -> int:
        return dict(self.moved).get(port, port)


def echo_text(
    config: EchoConfig, port: int, headers: Iterable[tuple[str, str]], **facts: str
) -> str:
    lines = [
        f"ServiceVersion={config.version}",
        f"ServicePort={port}",
        *(f"{key}={value}" for key, value in facts.items()),
        *(f"RequestHeader={name}:{value}" for name, value in headers),
        f"Hostname={config.hostname}",
    ]
    return "\n".join(lines) + "\n"


class _Echo(echo_pb2_grpc.EchoTestServiceServicer):
    def __init__(self, config: EchoConfig, port: int) -> None:
        self._config = config
        self._port = port

    async def Echo(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoResponse:
        metadata = [(str(k), str(v)) for k, v in context.invocation_metadata() or ()]
        text = echo_text(self._config, self._port, metadata, Proto="GRPC", Echo=request.message)
        return echo_pb2.EchoResponse(message=text)


def _http_app(config: EchoConfig, port: int) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        facts = {"Method": request.method, "URL": request.path_qs, "Host": request.host}
        text = echo_text(config, port, request.headers.items(), **facts)
        return web.Response(text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(config: EchoConfig, stop: asyncio.Event) -> None:
    """Serve every port until ``stop`` is set."""
    servers = []
    for port in config.grpc:  # a server per port, so that each answers with its own port
        server = grpc.aio.server()
        servicer = _Echo(config, port)
        echo_pb2_grpc.add_EchoTestServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"{config.host}:{config.bind(port)}")
        await server.start()
        servers.append(server)
    runners = []
    for port in config.http:
        runner = web.AppRunner(_http_app(config, port), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, config.host, config.bind(port)).start()
        runners.append(runner)
    tcp = [await asyncio.start_server(_tcp_echo, config.host, config.bind(p)) for p in config.tcp]
    try:
        await stop.wait()
    finally:
        for server in servers:
            await server.stop(grace=1)
        for runner in runners:
            await runner.cleanup()
        for listener in tcp:
            listener.close()


def _parse(argv: Sequence[str]) -> EchoConfig:
    argv = list(argv)
    image = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    demo = argparse.ArgumentParser(prog="echo", description=__doc__)
    demo.add_argument("--host", default="0.0.0.0")
    demo.add_argument("--port", type=int, help="where the container port is served")
    demo.add_argument("--container-port", type=int)
    args = demo.parse_args(own)
    app = argparse.ArgumentParser(prog="echo (image arguments)")
    app.add_argument("--port", type=int, action="append", default=[])
    app.add_argument("--grpc", type=int, action="append", default=[])
    app.add_argument("--tcp", type=int, action="append", default=[])
    app.add_argument("--version", default="v1")
    # The image's other flags (--metrics, --xds-grpc-server, --crt, --key) change nothing here.
    ports, _ = app.parse_known_args(image)
    moved: tuple[tuple[int, int], ...] = ()
    if args.port is not None and args.container_port not in (None, args.port):
        moved = ((args.container_port, args.port),)
    http = ports.port or ([args.port] if args.port and not ports.grpc else [])
    return EchoConfig(
        host=args.host,
        version=ports.version,
        hostname=os.environ.get("POD_NAME", "echo"),
        http=tuple(http),
        grpc=tuple(ports.grpc),
        tcp=tuple(ports.tcp),
        moved=moved,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = _parse(sys.argv[1:] if argv is None else argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
