"""The http_inspector listener filter on a bound listener, the real Envoy 1.40 and pymesh side
by side: an HTTP chain (``application_protocols``) and a TCP fallback to a line echo.
``filter_disabled`` turns the inspector off by destination port (everything is then TCP), and
a listener filter timeout without ``continue_on_listener_filters_timeout`` closes a client that
sends nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, direct, hcm, sa, vhost
from tests.support.envoy import make_proxy
from tests.support.httpclient import request
from tests.support.procs import free_port

pytestmark = pytest.mark.envoy

PROXY = "127.0.63.20"
ECHO = "127.0.63.21"
INSPECTOR = {
    "name": "envoy.filters.listener.http_inspector",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3"
        ".HttpInspector"
    },
}


def _listener(name: str, port: int, **extra: Any) -> dict[str, Any]:
    inspector = dict(INSPECTOR)
    if extra.pop("disabled", False):
        inspector["filter_disabled"] = {"destination_port_range": {"start": port, "end": port + 1}}
    tcp = {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "echo",
            "cluster": "echo",
        },
    }
    return {
        "name": name,
        "address": sa(PROXY, port),
        "listener_filters": [inspector],
        **extra,
        "filter_chains": [
            {
                "name": "http",
                "filter_chain_match": {"application_protocols": ["http/1.1", "h2c"]},
                "filters": [hcm([vhost([direct(200, "http chain")])])],
            },
            {"name": "tcp", "filters": [tcp]},
        ],
    }


@asynccontextmanager
async def _line_echo() -> AsyncIterator[tuple[str, int]]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    port = free_port(ECHO)
    server = await asyncio.start_server(echo, ECHO, port)
    try:
        yield ECHO, port
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["envoy", "pymesh"])
async def test_inspector_disabled_by_port_and_timeout_without_continue(
    kind: str, tmp_path: Path
) -> None:
    enabled, disabled, strict = (free_port(PROXY) for _ in range(3))
    async with _line_echo() as echo:
        config = bootstrap(
            [
                _listener("enabled", enabled),
                _listener("disabled", disabled, disabled=True),
                _listener("strict", strict, listener_filters_timeout="0.3s"),
            ],
            [cluster("echo", [echo])],
        )
        proxy = await make_proxy(kind, config, workdir=tmp_path, name=kind).astart()
        try:
            http = await request(PROXY, enabled, "GET", "/", host_header="a", timeout=10)
            assert (http.status, http.body) == (200, b"http chain")
            # Inspector off for this port: no application protocol, the TCP chain.
            reader, writer = await asyncio.open_connection(PROXY, disabled)
            writer.write(b"GET / HTTP/1.1\r\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"GET / HTTP/1.1\r\n"
            writer.close()
            # A silent client: at the timeout, without continue, the listener closes it.
            reader, writer = await asyncio.open_connection(PROXY, strict)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            await proxy.astop()
