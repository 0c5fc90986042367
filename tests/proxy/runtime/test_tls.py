"""Downstream TLS termination (a gateway's ``SIMPLE`` mode): Envoy's DownstreamTlsContext."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, route, sa, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.certs import self_signed


def _self_signed(tmp: Path, name: str, ip: str) -> tuple[Path, Path]:
    cert, key = self_signed(name, ip)
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


def _tls_listener(address: tuple[str, int], cert: Path, key: Path, hcm_filter: Any) -> Any:
    return {
        "name": "https",
        "address": sa(*address),
        "filter_chains": [
            {
                "filters": [hcm_filter],
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                        ".DownstreamTlsContext",
                        "common_tls_context": {
                            "tls_certificates": [
                                {
                                    "certificate_chain": {"filename": str(cert)},
                                    "private_key": {"filename": str(key)},
                                }
                            ]
                        },
                    },
                },
            }
        ],
    }


async def _https_get(address: tuple[str, int], cafile: Path, name: str) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*address, ssl=context, server_hostname=name), 5
    )
    writer.write(f"GET /tls HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_tls_is_terminated_and_the_request_routed(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Istio's Gateway ``tls.mode: SIMPLE``: the proxy presents the certificate, decrypts, and
    routes the plaintext request; the upstream sees ``x-forwarded-proto: https``."""
    up = await upstream_factory(upstream_ip(0))
    address = listen_address()
    cert, key = _self_signed(tmp_path, "bookinfo.example.com", address[0])
    config = bootstrap(
        [_tls_listener(address, cert, key, hcm([vhost([route("/")])]))],
        [cluster("backend", [up.address])],
    )
    await start_proxy(config)
    response = await _https_get(address, cert, "bookinfo.example.com")
    assert response.startswith(b"HTTP/1.1 200 ")
    assert up.received[-1].headers["x-forwarded-proto"] == "https"


async def test_a_client_that_does_not_trust_the_certificate_gets_no_response(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    address = listen_address()
    cert, key = _self_signed(tmp_path, "served.example.com", address[0])
    other, _ = _self_signed(tmp_path, "other.example.com", address[0])
    await start_proxy(
        bootstrap(
            [_tls_listener(address, cert, key, hcm([vhost([route("/")])]))],
            [cluster("backend", [up.address])],
        )
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await _https_get(address, other, "served.example.com")
    assert up.received == []
