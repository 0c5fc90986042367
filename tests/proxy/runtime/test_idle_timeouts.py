"""Stream idle timeouts: the connection manager's ``stream_idle_timeout`` and a route's
``idle_timeout`` (which replaces it). Envoy answers ``stream timeout``: 504 while the upstream
owes the response, 408 while the client still owes request bytes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, request
from tests.support.upstream import Chunked, Hang


def _config(up: Any, *, route_extra: Any = None, **hcm_extra: Any) -> dict[str, Any]:
    routes = [route("/", **(route_extra or {}))]
    return bootstrap(
        [listener(listen_address(), hcm([vhost(routes)], **hcm_extra))],
        [cluster("backend", [up.address])],
    )


async def test_route_idle_timeout_answers_504_when_the_upstream_goes_quiet(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), default=Hang())
    proxy = await start_proxy(_config(up, route_extra={"idle_timeout": "0.3s"}))
    started = time.monotonic()
    r = await request(*proxy.address, target="/", host_header="svc", timeout=20)
    elapsed = time.monotonic() - started
    assert (r.status, r.body) == (504, b"stream timeout")
    assert 0.25 < elapsed < 10.0  # the route's idle timeout, not the client's
    assert proxy.stat("http.ingress.downstream_rq_idle_timeout") == 1


async def test_stream_idle_timeout_answers_408_when_the_client_stops_sending(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(_config(up, stream_idle_timeout="0.3s"))
    async with await AsyncConnection.open(*proxy.address) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 10\r\n\r\nab")
        r = await conn.read_response(timeout=5)
    assert (r.status, r.body) == (408, b"stream timeout")


async def test_activity_keeps_a_slow_stream_alive(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Each chunk comes 0.2 s after the last: never 0.4 s of silence, though the whole
    response takes longer than that."""
    chunks = tuple(b"part%d " % i for i in range(5))
    up = await upstream_factory(upstream_ip(0), default=Chunked(chunks, interval=0.2))
    proxy = await start_proxy(_config(up, route_extra={"idle_timeout": "0.4s"}))
    r = await asyncio.wait_for(
        request(*proxy.address, target="/", host_header="svc", timeout=5), 10
    )
    assert (r.status, r.body) == (200, b"".join(chunks))
    assert proxy.stat("http.ingress.downstream_rq_idle_timeout") == 0
