"""Upstream TLS (Envoy's ``UpstreamTlsContext``): mesh mTLS to a real TLS server on loopback,
Istio's auto-mTLS ``transport_socket_matches``, SAN matchers, and the 503s a bad peer gets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import (
    bootstrap,
    cluster,
    file_access_log,
    hcm,
    listener,
    route,
    sa,
    vhost,
)
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, request
from tests.support.mesh_pki import MeshPki, WorkloadCert

_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
FLAGS_LOG = {"flags": "%RESPONSE_FLAGS%", "reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%"}


def upstream_tls(
    client: WorkloadCert | None,
    tmp: Path,
    root: Path | None,
    *,
    sans: tuple[str, ...] = (SERVER_ID,),
    sni: str = "outbound_.8080_._.server.default.svc.cluster.local",
    alpn: tuple[str, ...] = ("istio-peer-exchange", "istio"),
) -> dict[str, Any]:
    """An ``ISTIO_MUTUAL``-shaped socket with certificates from files."""
    common: dict[str, Any] = {"alpn_protocols": list(alpn)}
    if client is not None:
        cert, key = client.write(tmp, "client")
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
        ]
    validation: dict[str, Any] = {}
    if root is not None:
        validation["trusted_ca"] = {"filename": str(root)}
    if sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": san}} for san in sans
        ]
    if validation:
        common["validation_context"] = validation
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "UpstreamTlsContext",
            "common_tls_context": common,
            "sni": sni,
        },
    }


def _config(
    address: tuple[str, int], backend: dict[str, Any], log: Path | None = None, **route_kw: Any
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if log is not None:
        extra["access_log"] = file_access_log(str(log), FLAGS_LOG)
    main = listener(address, hcm([vhost([route("/", **route_kw)])], **extra))
    return bootstrap([main], [backend])


def _log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_mesh_mtls_to_a_tls_upstream_reuses_one_handshake(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """The client presents its workload certificate, verifies the server's chain and SPIFFE
    ID, offers Istio's ALPN; two requests share one connection (one handshake)."""
    pki = MeshPki()
    server_tls = pki.server_context(pki.workload("default", "server"), alpn=("istio",))
    up = await upstream_factory(upstream_ip(0), tls=server_tls)
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    address = listen_address()
    proxy = await start_proxy(
        _config(address, cluster("backend", [up.address], transport_socket=socket))
    )
    async with await AsyncConnection.open(*address, timeout=5) as conn:
        for _ in range(2):
            response = await conn.request("GET", "/mtls", host="server", timeout=5)
            assert response.status == 200
    assert [r.path for r in up.received] == ["/mtls", "/mtls"]
    assert up.tls_peers == [("istio", (CLIENT_ID,))]
    assert proxy.stat("cluster.backend.ssl.handshake") == 1
    assert proxy.stat("cluster.backend.upstream_cx_total") == 1


@pytest.mark.parametrize(
    ("case", "stat"),
    [
        ("wrong SPIFFE ID", "cluster.backend.ssl.fail_verify_san"),
        ("another root", "cluster.backend.ssl.fail_verify_error"),
        ("expired", "cluster.backend.ssl.fail_verify_error"),
    ],
)
async def test_a_server_that_fails_verification_gets_503_uf_urx(
    case: str, stat: str, tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Envoy's verdicts: no request reaches the server; the client answers 503 with UF
    (and URX once Istio's connect-failure retries are spent) and names the TLS failure."""
    pki = MeshPki()
    if case == "wrong SPIFFE ID":
        served = pki.workload("default", "impostor")
    elif case == "another root":
        served = MeshPki().workload("default", "server")
    else:
        served = pki.workload("default", "server", ttl=600, at=time.time() - 3600)
    up = await upstream_factory(upstream_ip(0), tls=pki.server_context(served))
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    address = listen_address()
    log = tmp_path / "access.log"
    retry = {"retry_on": "connect-failure", "num_retries": 2}
    proxy = await start_proxy(
        _config(
            address,
            cluster("backend", [up.address], transport_socket=socket),
            log,
            retry_policy=retry,
        )
    )
    response = await request(*address, "GET", "/", host_header="server")
    assert response.status == 503
    assert response.body.endswith(b"retried and the latest reset reason: remote connection failure")
    assert up.received == []
    assert proxy.stat(stat) == 3  # the try and two retries
    assert proxy.stat("cluster.backend.ssl.connection_error") == 0
    assert proxy.stat("cluster.backend.ssl.handshake") == 0
    await proxy.stop()
    (entry,) = _log_lines(log)
    assert entry["flags"] == "URX,UF"  # set in that order, rendered so by Envoy 1.40
    assert entry["reason"].startswith("TLS_error:|")
    assert ":CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_" in entry["reason"]


async def test_a_plaintext_server_fails_the_handshake(
    tmp_path: Path, start_proxy: StartProxy
) -> None:
    """TLS to a server that answers in clear text (a workload without a sidecar, when auto
    mTLS is not in use): 503 UF with OpenSSL's reason; nothing is sent in clear text."""
    seen: list[bytes] = []

    async def plaintext_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(1024))
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plaintext_http, upstream_ip(0), 0)
    port = server.sockets[0].getsockname()[1]
    pki = MeshPki()
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    address = listen_address()
    log = tmp_path / "access.log"
    try:
        proxy = await start_proxy(
            _config(
                address, cluster("backend", [(upstream_ip(0), port)], transport_socket=socket), log
            )
        )
        response = await request(*address, "GET", "/secret", host_header="server")
    finally:
        server.close()
    assert response.status == 503
    assert seen and seen[0].startswith(b"\x16\x03")  # a TLS handshake record, not HTTP
    await proxy.stop()
    (entry,) = _log_lines(log)
    assert entry["flags"] == "UF"
    assert "WRONG_VERSION_NUMBER" in entry["reason"]


async def test_auto_mtls_matches_tls_mode_istio_endpoints_only(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Istio's auto mTLS: ``transport_socket_matches`` sends mTLS to endpoints labelled
    ``tlsMode: istio`` and plaintext to the rest, in one cluster."""
    pki = MeshPki()
    sidecar = await upstream_factory(
        upstream_ip(0), tls=pki.server_context(pki.workload("default", "server"))
    )
    legacy = await upstream_factory(upstream_ip(1))
    mtls = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    backend = cluster("backend", [])
    backend["load_assignment"]["endpoints"] = [
        {
            "lb_endpoints": [
                {
                    "endpoint": {"address": sa(*sidecar.address)},
                    "metadata": {
                        "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}
                    },
                },
                {"endpoint": {"address": sa(*legacy.address)}},
            ]
        }
    ]
    backend["transport_socket_matches"] = [
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls},
        {
            "name": "tlsMode-disabled",
            "match": {},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                },
            },
        },
    ]
    address = listen_address()
    proxy = await start_proxy(_config(address, backend))
    for _ in range(4):
        response = await request(*address, "GET", "/auto", host_header="server")
        assert response.status == 200
    assert len(sidecar.received) == 2 and len(legacy.received) == 2
    assert [peer for _, peer in sidecar.tls_peers] == [(CLIENT_ID,)] * len(sidecar.tls_peers)
    assert proxy.stat("cluster.backend.ssl.handshake") == len(sidecar.tls_peers)


async def test_certificates_from_static_sds_secrets(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Istio's shape: the certificate and the root as SDS secrets (here static ones), the
    SAN matchers inline (``combined_validation_context``)."""
    pki = MeshPki()
    up = await upstream_factory(
        upstream_ip(0), tls=pki.server_context(pki.workload("default", "server"))
    )
    client = pki.workload("default", "client")
    cert, key = client.write(tmp_path, "client")
    root = pki.write_root(tmp_path)
    socket = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "UpstreamTlsContext",
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": "default"}],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}
                        ]
                    },
                    "validation_context_sds_secret_config": {"name": "ROOTCA"},
                },
            },
        },
    }
    address = listen_address()
    config = _config(address, cluster("backend", [up.address], transport_socket=socket))
    config["static_resources"]["secrets"] = [
        {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"filename": str(cert)},
                "private_key": {"filename": str(key)},
            },
        },
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"filename": str(root)}}},
    ]
    await start_proxy(config)
    response = await request(*address, "GET", "/sds", host_header="server")
    assert response.status == 200
    assert up.tls_peers == [(None, (CLIENT_ID,))]


async def test_without_a_trusted_ca_the_server_is_not_verified(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Envoy's behaviour (DestinationRule SIMPLE without caCertificates): encrypted, but any
    server certificate is accepted."""
    pki = MeshPki()
    other = MeshPki()
    up = await upstream_factory(
        upstream_ip(0), tls=pki.server_context(other.workload("default", "server"))
    )
    # The server still wants a client certificate from its own root.
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, None, sans=())
    address = listen_address()
    await start_proxy(_config(address, cluster("backend", [up.address], transport_socket=socket)))
    response = await request(*address, "GET", "/simple", host_header="server")
    assert response.status == 200
