"""The echo app (Istio's grpc-echo sample's stand-in) and its gRPC client, on 127.0.0.119:
HTTP, gRPC and TCP answers, the container port moved behind a sidecar, the client through a
proxy address with the service as authority."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from pymesh.proto import echo_pb2, echo_pb2_grpc
from pymesh.samples.echo import EchoConfig, _parse, serve
from tests.support.procs import free_port
from tests.support.waiting import wait_until

HOST = "127.0.0.119"


def test_image_arguments_and_the_moved_container_port() -> None:
    config = _parse(
        ["--host", HOST, "--port", "37070", "--container-port", "17070", "--",
         "--metrics=15014", "--port", "18080", "--tcp", "19090", "--grpc", "17070",
         "--grpc", "17171", "--version", "v2", "--crt=/cert.crt"]
    )  # fmt: skip
    assert (config.http, config.grpc, config.tcp, config.version) == (
        (18080,),
        (17070, 17171),
        (19090,),
        "v2",
    )
    assert [config.bind(p) for p in (17070, 17171, 18080)] == [37070, 17171, 18080]


@pytest.fixture
async def echo() -> AsyncIterator[EchoConfig]:
    http, grpc_port, tcp, moved = (free_port(HOST) for _ in range(4))
    config = EchoConfig(
        HOST, "v3", "echo-test", (http,), (grpc_port, 17070), (tcp,), ((17070, moved),)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))

    async def accepting(port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            return False
        writer.close()
        return True

    for port in (http, grpc_port, tcp, moved):
        await wait_until(lambda port=port: accepting(port), f"the echo app on port {port}", 10)
    yield config
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_http_grpc_and_tcp_answers(echo: EchoConfig) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{echo.http[0]}/a?b=1", headers={"x-test": "1"}) as resp,
    ):
        text = await resp.text()
    lines = text.splitlines()
    assert lines[:2] == ["ServiceVersion=v3", f"ServicePort={echo.http[0]}"]
    assert "URL=/a?b=1" in lines and "RequestHeader=x-test:1" in lines
    assert lines[-1] == "Hostname=echo-test"

    async with grpc.aio.insecure_channel(f"{HOST}:{echo.bind(17070)}") as channel:
        stub = echo_pb2_grpc.EchoTestServiceStub(channel)
        reply = await stub.Echo(echo_pb2.EchoRequest(message="hi"), metadata=[("x-id", "7")])
    lines = reply.message.splitlines()
    # The moved port answers as the container port it stands for.
    assert lines[:4] == ["ServiceVersion=v3", "ServicePort=17070", "Proto=GRPC", "Echo=hi"]
    assert "RequestHeader=x-id:7" in lines

    reader, writer = await asyncio.open_connection(HOST, echo.tcp[0])
    writer.write(b"ping\n")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"ping\n"
    writer.close()


async def test_client_calls_through_its_proxy_and_reports_failures(echo: EchoConfig) -> None:
    # The echo server stands in for the pod's sidecar (HTTP_PROXY): the client speaks HTTP/2
    # to it directly, never CONNECT.
    proxy = f"http://{HOST}:{echo.grpc[0]}"
    env = {**os.environ, "HTTP_PROXY": proxy, "http_proxy": proxy}
    argv = [sys.executable, "-m", "pymesh.samples.grpc_client", "echo.echo-grpc:7070"]
    done = await asyncio.to_thread(
        subprocess.run, [*argv, "--count", "2"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Echo=hello") == 2

    dead = f"http://{HOST}:{free_port(HOST)}"
    failed = await asyncio.to_thread(
        subprocess.run,
        [*argv, "--timeout", "2"],
        env={**env, "HTTP_PROXY": dead, "http_proxy": dead},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("UNAVAILABLE"), failed.stderr
