"""The demo's service proxy (kube-proxy's role for sidecar-less pods): request heads, the
Service table, and real connections on the demo-auth area (``127.0.50.0/24``)."""

from __future__ import annotations

import asyncio

import pytest

from pymesh.demo.service_proxy import ServiceProxy, ServiceTable, parse_request

PROXY = "127.0.50.1"
POD_A, POD_B = "127.0.50.11", "127.0.50.12"

HTTPBIN = {
    "kind": "Service",
    "metadata": {"name": "httpbin", "namespace": "foo"},
    "spec": {"selector": {"app": "httpbin"}, "ports": [{"port": 8000, "targetPort": 8080}]},
}
DETAILS = {
    "kind": "Service",
    "metadata": {"name": "details"},
    "spec": {"selector": {"app": "details"}, "ports": [{"port": 9080, "targetPort": "http"}]},
}


def test_absolute_form_becomes_origin_form_with_connection_close():
    req = parse_request(
        b"GET http://httpbin.foo:8000/ip?x=1 HTTP/1.1\r\nHost: httpbin.foo:8000\r\n"
        b"Proxy-Connection: Keep-Alive\r\nAccept: */*\r\n\r\n"
    )
    assert (req.host, req.port) == ("httpbin.foo", 8000)
    assert req.head == (
        b"GET /ip?x=1 HTTP/1.1\r\nHost: httpbin.foo:8000\r\nAccept: */*\r\n"
        b"Connection: close\r\n\r\n"
    )


def test_origin_form_uses_the_host_header_and_port_80_by_default():
    req = parse_request(b"GET / HTTP/1.1\r\nhost: Sleep.Legacy\r\n\r\n")
    assert (req.host, req.port) == ("sleep.legacy", 80)
    assert parse_request(b"GET http://a.b HTTP/1.1\r\n\r\n").head.startswith(b"GET / HTTP/1.1")


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"CONNECT httpbin.foo:443 HTTP/1.1\r\n\r\n", "CONNECT"),
        (b"GET / HTTP/1.1\r\n\r\n", "no host"),
        (b"hello\r\n\r\n", "not an HTTP/1.x request line"),
    ],
)
def test_bad_requests_are_named(head, error):
    with pytest.raises(ValueError, match=error):
        parse_request(head)


def test_service_names_resolve_to_the_selected_pods_on_the_target_port():
    table = ServiceTable.build(
        [HTTPBIN, DETAILS],
        [
            ("foo", {"app": "httpbin", "version": "v1"}, POD_A, 8080),
            ("bar", {"app": "httpbin"}, POD_B, 8080),  # another namespace's httpbin
            ("default", {"app": "details"}, POD_B, 9080),
        ],
    )
    for host in ("httpbin.foo", "httpbin.foo.svc", "httpbin.foo.svc.cluster.local"):
        assert table.endpoints(host, 8000) == [(POD_A, 8080)]
    assert table.endpoints("httpbin.foo", 8080) == []  # not a Service port
    assert table.endpoints("httpbin.bar", 8000) == []  # no Service there
    assert table.endpoints("details", 9080) == [(POD_B, 9080)]  # named port: the container's


async def _server(host: str, answer: bytes | None) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if answer is None:  # a STRICT sidecar: no plaintext filter chain, the connection ends
            writer.close()
            return
        writer.write(answer + head)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, host, 0)


async def _through(proxy: ServiceProxy, url: str) -> bytes:
    reader, writer = await asyncio.open_connection(PROXY, proxy.port)
    writer.write(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_requests_reach_the_pod_and_refusals_reset_the_client():
    ok = await _server(POD_A, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
    strict = await _server(POD_B, None)
    ok_port, strict_port = (s.sockets[0].getsockname()[1] for s in (ok, strict))
    services = [
        {
            "kind": "Service",
            "metadata": {"name": name, "namespace": "foo"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 8000, "targetPort": port}]},
        }
        for name, port in (("open", ok_port), ("strict", strict_port))
    ]
    pods = [("foo", {"app": "open"}, POD_A, None), ("foo", {"app": "strict"}, POD_B, None)]
    proxy = ServiceProxy(PROXY, 0, lambda: ServiceTable.build(services, pods))
    await proxy.start()
    assert proxy._server is not None
    proxy.port = proxy._server.sockets[0].getsockname()[1]
    try:
        answer = await _through(proxy, "http://open.foo:8000/ip")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert b"GET /ip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" in answer
        for url in ("http://strict.foo:8000/ip", "http://missing.foo:8000/"):
            with pytest.raises(ConnectionResetError):
                await _through(proxy, url)
    finally:
        await proxy.stop()
        for server in (ok, strict):
            server.close()
