"""``envoy.access_loggers.http_grpc`` and ``tcp_grpc`` in a running proxy: a static
bootstrap whose Access Log Service cluster speaks HTTP/2 (as Istio's does), entries for
requests and TCP connections arriving at a real gRPC service, and a service that is not
there failing nothing."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from tests.proxy.als_recorder import Recorder, als_server
from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.proxy.runtime.test_tcp_proxy import tcp_listener
from tests.support.httpclient import request
from tests.support.procs import free_port
from tests.support.waiting import wait_until

_T = "type.googleapis.com/"
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def grpc_log(kind: str, log_name: str) -> dict[str, Any]:
    message = "HttpGrpcAccessLogConfig" if kind == "http" else "TcpGrpcAccessLogConfig"
    common = {
        "log_name": log_name,
        "grpc_service": {"envoy_grpc": {"cluster_name": "als"}},
        "transport_api_version": "V3",
        "buffer_flush_interval": "0.05s",
    }
    config: dict[str, Any] = {"@type": f"{_T}envoy.extensions.access_loggers.grpc.v3.{message}"}
    config["common_config"] = common
    if kind == "http":
        config["additional_request_headers_to_log"] = ["x-trace"]
    return {"name": f"envoy.access_loggers.{kind}_grpc", "typed_config": config}


def config_for(
    http: tuple[str, int], tcp: tuple[str, int], upstream: tuple[str, int], als: tuple[str, int]
) -> dict[str, Any]:
    tcp_l = tcp_listener(tcp, "app")
    tcp_l["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = [grpc_log("tcp", "tcp")]
    return bootstrap(
        [
            listener(
                http,
                hcm([vhost(routes=[route(cluster="app")])], access_log=[grpc_log("http", "http")]),
            ),
            tcp_l,
        ],
        [
            cluster("app", [upstream]),
            cluster("als", [als], typed_extension_protocol_options=H2_OPTIONS),
        ],
    )


async def test_requests_and_connections_are_streamed_to_the_service(
    start_proxy: StartProxy, upstream_factory: Any
) -> None:
    up = await upstream_factory(upstream_ip(20))
    als = (upstream_ip(21), free_port(upstream_ip(21)))
    http, tcp = listen_address(), listen_address()
    recorder = Recorder()
    async with als_server(*als, recorder):
        proxy = await start_proxy(config_for(http, tcp, (up.host, up.port), als))
        resp = await request(*http, "GET", "/hello", [("x-trace", "t1")], host_header="app")
        assert resp.status == 200
        reader, writer = await asyncio.open_connection(*tcp)
        raw = b"GET /raw HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n"
        writer.write(raw)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        await wait_until(lambda: recorder.http() and recorder.tcp(), "an HTTP and a TCP entry")
        [entry] = recorder.http()
        assert entry.request.path == "/hello" and entry.response.response_code.value == 200
        assert dict(entry.request.request_headers) == {"x-trace": "t1"}
        assert entry.common_properties.upstream_cluster == "app"
        assert entry.common_properties.upstream_remote_address.socket_address.port_value == up.port
        [conn] = recorder.tcp()
        assert conn.connection_properties.received_bytes == len(raw)
        assert conn.connection_properties.sent_bytes > 0
        assert conn.common_properties.duration.ToNanoseconds() > 0
        assert conn.common_properties.upstream_cluster == "app"
        names = sorted(s[0].identifier.log_name for s in recorder.streams)
        assert names == ["http", "tcp"]
        assert proxy.stat("access_logs.grpc_access_log.logs_written") == 2
        await proxy.stop()


async def test_a_missing_service_fails_no_request(
    start_proxy: StartProxy, upstream_factory: Any
) -> None:
    up = await upstream_factory(upstream_ip(22))
    als = (upstream_ip(23), free_port(upstream_ip(23)))  # nothing listens there
    http, tcp = listen_address(), listen_address()
    proxy = await start_proxy(config_for(http, tcp, (up.host, up.port), als))
    for _ in range(3):
        resp = await asyncio.wait_for(request(*http, "GET", "/x", host_header="app"), 5)
        assert resp.status == 200
    assert proxy.stat("access_logs.grpc_access_log.logs_written") == 0
    await proxy.stop()  # what is buffered is dropped, and counted, at shutdown
    assert proxy.stat("access_logs.grpc_access_log.logs_dropped") == 3


CERTS = Path(__file__).resolve().parents[1] / "config" / "data" / "certs"


async def test_a_tls_listener_reports_its_own_identity(
    start_proxy: StartProxy, upstream_factory: Any
) -> None:
    """The local certificate's URI SAN is what mixer reports as the destination principal."""
    up = await upstream_factory(upstream_ip(25))
    als = (upstream_ip(26), free_port(upstream_ip(26)))
    https, tcp = listen_address(), listen_address()
    recorder = Recorder()
    config = config_for(https, tcp, (up.host, up.port), als)
    config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(CERTS / "workload.pem")},
                        "private_key": {"filename": str(CERTS / "workload-key.pem")},
                    }
                ]
            },
        },
    }
    async with als_server(*als, recorder):
        proxy = await start_proxy(config)
        context = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
        name = "productpage.default.svc.cluster.local"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*https, ssl=context, server_hostname=name), 5
        )
        writer.write(f"GET /tls HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        await wait_until(lambda: recorder.http(), "the request's entry")
        [entry] = recorder.http()
        tls = entry.common_properties.tls_properties
        assert [s.uri for s in tls.local_certificate_properties.subject_alt_name] == [
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        ]
        assert not tls.peer_certificate_properties.subject_alt_name  # no client certificate
        assert tls.tls_version == tls.TLSv1_3
        await proxy.stop()
