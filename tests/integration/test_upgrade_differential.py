"""WebSocket upgrades and CONNECT tunnels through the real Envoy 1.40 and through ``pymesh
proxy`` on the same bootstrap: the same requests must be switched, refused or tunnelled the
same way, with the same bytes both ways, the same ends, access-log lines and stats.

Covered: HTTP/1.1 upgrades allowed by the connection manager or by a route (and refused by a
route, or for want of any config: 403; no route: 404), an origin that refuses the switch, a
real ``websockets`` client and server talking through the proxy, bytes sent right behind the
upgrade request, the client's FIN, a route ``idle_timeout`` closing a quiet tunnel; CONNECT
proxied to an HTTP/1.1 origin and terminated by the proxy into plain TCP (``connect_config``);
and over HTTP/2, extended CONNECT (RFC 8441, ``allow_connect``) and classic CONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve

from tests.integration.test_envoy_differential import admin_stats
from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.support import UPGRADE_NET, address
from tests.support.envoy import PROXY_KINDS, find_envoy, make_proxy
from tests.support.h2client import H2Client
from tests.support.procs import free_port
from tests.support.tunnel_origin import AFTER_EOF, TunnelOrigin
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(find_envoy() is None, reason="the envoy binary is not installed"),
]

PROXY = address(UPGRADE_NET, 5)
ADMIN = address(UPGRADE_NET, 6)
ORIGIN = address(UPGRADE_NET, 60)
TCP_ORIGIN = address(UPGRADE_NET, 61)
WS_ORIGIN = address(UPGRADE_NET, 62)
WS = ("upgrade: websocket", "connection: upgrade")
LOG_FORMAT = (
    "%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %RESPONSE_FLAGS% "
    "%RESPONSE_CODE_DETAILS% %PROTOCOL% %UPSTREAM_CLUSTER%\n"
)
# Timing decides these, not behaviour: byte counts, durations, and which side of a closing
# tunnel noticed first (local and remote destroys).
STATS_THAT_DIFFER_BY_DESIGN = ("_bytes_total", "_bytes_buffered", "_time", "_destroy_local",
                               "_destroy_remote", "_destroy", "_rq_pending_total")  # fmt: skip
READ_TIMEOUT = 10.0


def config(listen: dict[str, tuple[str, int]], log: Path, origins: dict[str, Any]) -> Any:
    routes = [
        route("/off", cluster="origin",
              upgrade_configs=[{"upgrade_type": "websocket", "enabled": False}]),
        route("/foo", cluster="origin", upgrade_configs=[{"upgrade_type": "foo"}]),
        route("/idle", cluster="origin", idle_timeout="0.5s"),
        route("/real", cluster="ws"),
        route(None, cluster="origin", match={
            "connect_matcher": {},
            "headers": [{"name": ":authority", "string_match": {"exact": "proxied:1"}}],
        }),
        route(None, cluster="tcp", match={"connect_matcher": {}}, upgrade_configs=[
            {"upgrade_type": "CONNECT", "connect_config": {}}
        ]),
        route("/", cluster="origin"),
    ]  # fmt: skip
    # No upgrade_configs on this connection manager: only a route can allow one.
    strict_routes = [
        route("/on", cluster="origin", upgrade_configs=[{"upgrade_type": "websocket"}]),
        route(None, cluster="tcp", match={"connect_matcher": {}}),
        route("/", cluster="origin"),
    ]
    access_log = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                "FileAccessLog",
                "path": str(log),
                "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
            },
        }
    ]
    upgrades = [{"upgrade_type": "websocket"}, {"upgrade_type": "CONNECT"}]
    return bootstrap(
        [
            listener(
                listen["open"],
                hcm(
                    [vhost(routes)],
                    upgrade_configs=upgrades,
                    access_log=access_log,
                    http2_protocol_options={"allow_connect": True},
                ),
                name="open",
            ),
            listener(
                listen["strict"],
                hcm(
                    [vhost(strict_routes, domains=["svc", "svc:443"])],
                    stat_prefix="strict",
                    access_log=access_log,
                ),
                name="strict",
            ),
        ],
        [
            cluster("origin", [origins["origin"].address]),
            cluster("tcp", [origins["tcp"].address]),
            cluster("ws", [origins["ws"]]),
        ],
        admin=(ADMIN, free_port(ADMIN)),
    )


# -- HTTP/1.1 by hand ------------------------------------------------------------------------


def _head(method: str, target: str, *fields: str, host: str = "svc") -> bytes:
    return (
        "\r\n".join([f"{method} {target} HTTP/1.1", f"host: {host}", *fields]) + "\r\n\r\n"
    ).encode()


class _Raw:
    """One client connection; reads are bounded and wait for what they expect."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.data, self.eof = reader, writer, b"", False

    @classmethod
    async def open(cls, listen: tuple[str, int]) -> _Raw:
        return cls(*await asyncio.open_connection(*listen))

    async def read_until(self, check: Callable[[bytes], bool]) -> None:
        async def more() -> None:
            while not check(self.data) and not self.eof:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionResetError:
                    chunk = b""
                self.data += chunk
                self.eof = not chunk

        await asyncio.wait_for(more(), READ_TIMEOUT)

    def response(self) -> dict[str, Any]:
        head, _, body = self.data.partition(b"\r\n\r\n")
        line, *fields = head.decode().split("\r\n")
        volatile = ("date:", "x-envoy-upstream-service-time:")
        return {
            "status": line,
            "fields": sorted(f.lower() for f in fields if not f.lower().startswith(volatile)),
            "after head": body,
            "closed": self.eof,
        }

    def close(self) -> None:
        self.writer.close()


async def _refused(listen: tuple[str, int], request: bytes) -> dict[str, Any]:
    """A request the proxy answers without switching: the answer, then the close."""
    client = await _Raw.open(listen)
    client.writer.write(request)
    await client.read_until(lambda _: False)  # to the end: a refused switch closes
    client.close()
    return client.response()


async def _switched(listen: tuple[str, int], request: bytes, early: bytes = b"") -> dict[str, Any]:
    """Switch, echo bytes sent with the head and after it, then the client's FIN: Envoy's
    HTTP/1.1 connection manager has no half-close, so the tunnel ends there (the origin's
    answer to the FIN never reaches the client)."""
    client = await _Raw.open(listen)
    client.writer.write(request + early)
    await client.read_until(lambda d: d.endswith(b"\r\n\r\n" + early) and b"\r\n\r\n" in d)
    client.writer.write(b"late")
    await client.read_until(lambda d: d.endswith(b"late"))
    client.writer.write_eof()
    await client.read_until(lambda _: False)
    client.close()
    return client.response()


async def _idle(listen: tuple[str, int]) -> dict[str, Any]:
    client = await _Raw.open(listen)
    client.writer.write(_head("GET", "/idle", *WS))
    await client.read_until(lambda _: False)  # the route's idle_timeout ends the quiet tunnel
    client.close()
    return client.response()


async def _real_websocket(listen: tuple[str, int]) -> dict[str, Any]:
    url = f"ws://{listen[0]}:{listen[1]}/real"
    async with ws_connect(url, open_timeout=READ_TIMEOUT, close_timeout=READ_TIMEOUT) as ws:
        replies = []
        for message in ("hello", b"\x00\x01binary", "x" * 70000):
            await ws.send(message)
            replies.append(await asyncio.wait_for(ws.recv(), READ_TIMEOUT) == message)
        await ws.close(code=4001, reason="done")
        return {
            "echoed": replies,
            "close": (ws.close_code, ws.close_reason),
            "subprotocol": ws.subprotocol,
        }


# -- HTTP/2 ----------------------------------------------------------------------------------


async def _h2(listen: tuple[str, int], authority: str, path: str, protocol: str | None) -> Any:
    """A CONNECT over HTTP/2 (extended when ``protocol`` is given): send a few bytes and end
    the stream (the half-close), then read what comes back until the stream ends."""
    async with await H2Client.open(*listen) as client:
        await wait_until(lambda: client.remote_settings, "the proxy's SETTINGS")
        sid = client.start(
            "CONNECT", path, authority=authority, protocol=protocol, end_stream=False
        )
        reply = client.replies[sid]
        await wait_until(lambda: reply.status is not None or reply.done.is_set(), "an answer")
        if reply.status == 200:
            await client.send_body(sid, b"ping", end_stream=True)
        with contextlib.suppress(TimeoutError):
            await client.wait(sid, timeout=2.0 if reply.status == 200 else READ_TIMEOUT)
    volatile = ("date", "x-envoy-upstream-service-time")
    return {
        "status": reply.status,
        "fields": sorted(f for f in reply.headers if f[0] not in volatile),
        "body": reply.body,
        "ended": reply.done.is_set(),
        "reset": reply.reset_code,
    }


Case = Callable[[dict[str, tuple[str, int]]], Awaitable[Any]]

CASES: dict[str, Case] = {
    "websocket with bytes behind the head": lambda at: _switched(
        at["open"], _head("GET", "/ws", *WS), early=b"early"
    ),
    "websocket with a body length": lambda at: _switched(
        at["open"], _head("POST", "/ws", *WS, "content-length: 4"), early=b"body"
    ),
    "real websocket client and server": lambda at: _real_websocket(at["open"]),
    "route disables websocket": lambda at: _refused(at["open"], _head("GET", "/off", *WS)),
    "upgrade type nobody allows": lambda at: _refused(
        at["open"], _head("GET", "/x", "upgrade: bar", "connection: upgrade")
    ),
    "route allows a type the manager lacks": lambda at: _switched(
        at["open"], _head("GET", "/foo", "upgrade: foo", "connection: upgrade")
    ),
    "origin refuses the switch": lambda at: _refused(at["open"], _head("GET", "/refuse", *WS)),
    "no upgrade config at all": lambda at: _refused(at["strict"], _head("GET", "/x", *WS)),
    "only the route allows it": lambda at: _switched(at["strict"], _head("GET", "/on", *WS)),
    "upgrade without a route": lambda at: _refused(
        at["strict"], _head("GET", "/x", *WS, host="elsewhere")
    ),
    "idle tunnel closed by the route's idle_timeout": lambda at: _idle(at["open"]),
    "CONNECT proxied to the origin": lambda at: _switched(
        at["open"], _head("CONNECT", "proxied:1", host="proxied:1")
    ),
    "CONNECT terminated into TCP": lambda at: _switched(
        at["open"], _head("CONNECT", "other:2", host="other:2"), early=b"early"
    ),
    "CONNECT on a route without an upgrade config": lambda at: _refused(
        at["strict"], _head("CONNECT", "svc:443", host="svc:443")
    ),
    "CONNECT names its authority, not Host": lambda at: _refused(
        at["strict"], _head("CONNECT", "other:2", host="svc")
    ),
    "CONNECT without a route": lambda at: _refused(
        at["strict"], _head("CONNECT", "other:2", host="elsewhere")
    ),
    "HTTP/2 extended CONNECT websocket": lambda at: _h2(at["open"], "svc", "/ws", "websocket"),
    "HTTP/2 extended CONNECT refused by the origin": lambda at: _h2(
        at["open"], "svc", "/refuse", "websocket"
    ),
    "HTTP/2 CONNECT proxied (its end closes the origin)": lambda at: _h2(
        at["open"], "proxied:1", "", None
    ),
    "HTTP/2 CONNECT terminated (half-close both ways)": lambda at: _h2(
        at["open"], "other:2", "", None
    ),
}


async def _ws_echo(connection: ServerConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in connection:
            await connection.send(message)


async def _settled(proxy: Any) -> dict[str, str] | None:
    stats = await admin_stats(proxy)
    active = ("http.ingress.downstream_cx_active", "http.strict.downstream_cx_active")
    return stats if all(stats.get(name) == "0" for name in active) else None


async def run(kind: str, tmp: Path) -> tuple[dict[str, Any], list[str], dict[str, str], Any]:
    work = tmp / kind
    work.mkdir()
    log = work / "access.log"
    origin = await TunnelOrigin(ORIGIN).start()
    tcp = await TunnelOrigin(TCP_ORIGIN, raw=True).start()
    async with serve(_ws_echo, WS_ORIGIN, 0, max_size=None) as ws_server:
        ws_address = ws_server.sockets[0].getsockname()[:2]
        listen = {name: (PROXY, free_port(PROXY)) for name in ("open", "strict")}
        origins = {"origin": origin, "tcp": tcp, "ws": ws_address}
        proxy = make_proxy(kind, config(listen, log, origins), workdir=work)
        await proxy.astart()
        results: dict[str, Any] = {}
        try:
            for name, case in CASES.items():
                results[name] = await asyncio.wait_for(case(listen), 30.0)
            stats = await wait_until(
                lambda: _settled(proxy), "every client connection closed", timeout=10.0
            )
        finally:
            await proxy.astop()
            await origin.stop()
            await tcp.stop()
    # What the origin was asked to switch to (when it saw each close is a matter of timing).
    seen = origin.heads
    lines = log.read_text()
    for name, (host, port) in listen.items():  # the websocket client names the listener
        lines = lines.replace(f"{host}:{port}", f"<{name} listener>")
    return results, lines.splitlines(), stats, seen


async def test_upgrades_and_connect_agree_with_envoy(tmp_path: Path) -> None:
    runs = {kind: await run(kind, tmp_path) for kind in PROXY_KINDS}
    envoy, pymesh = runs["envoy"], runs["pymesh"]
    differences = {
        name: {"envoy": envoy[0][name], "pymesh": pymesh[0][name]}
        for name in CASES
        if envoy[0][name] != pymesh[0][name]
    }
    assert differences == {}, __import__("pprint").pformat(differences)
    assert pymesh[3] == envoy[3]
    assert sorted(pymesh[1]) == sorted(envoy[1])
    common = {
        name
        for name in envoy[2].keys() & pymesh[2].keys()
        if name.startswith(("cluster.origin.", "cluster.tcp.", "cluster.ws.", "http.ingress.",
                            "http.strict."))
        and not name.endswith(STATS_THAT_DIFFER_BY_DESIGN)
    }  # fmt: skip
    stat_differences = {
        name: (envoy[2][name], pymesh[2][name])
        for name in sorted(common)
        if envoy[2][name] != pymesh[2][name]
    }
    assert stat_differences == {}
    # What the cases show, so that agreeing on nothing cannot pass.
    results = pymesh[0]
    assert results["real websocket client and server"]["echoed"] == [True, True, True]
    assert results["websocket with bytes behind the head"]["after head"] == b"earlylate"
    assert results["route disables websocket"]["status"] == "HTTP/1.1 403 Forbidden"
    assert results["upgrade without a route"]["status"] == "HTTP/1.1 404 Not Found"
    terminated = results["HTTP/2 CONNECT terminated (half-close both ways)"]
    assert terminated["body"] == b"ping" + AFTER_EOF
    assert terminated["ended"]
