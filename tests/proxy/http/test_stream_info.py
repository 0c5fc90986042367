"""StreamInfo and ConnectionInfo are plain values: built from a real TLS session, read by the
access log's command operators without any stream or connection around them."""

from __future__ import annotations

import contextlib
import hashlib
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.access_log import compile_format, render_format
from proxy.http.local_reply import ResponseFlag
from proxy.http.stream_info import ConnectionInfo, StreamInfo, connection_info
from tests.support.certs import self_signed

CERTS = Path(__file__).parents[1] / "config" / "data" / "certs"


class _Transport:
    def __init__(self, ssl_object: ssl.SSLObject | None) -> None:
        self._extra = {
            "peername": ("127.0.1.100", 40000),
            "sockname": ("127.0.1.1", 443),
            "ssl_object": ssl_object,
        }

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._extra.get(name, default)


def _handshake(tmp_path: Path) -> ssl.SSLObject:
    """A real mutual-TLS handshake in memory; returns the server's side of it."""
    cert, key = self_signed("gateway.example")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server_ctx.load_verify_locations(CERTS / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.set_alpn_protocols(["http/1.1"])
    server_ctx.sni_callback = lambda obj, name, ctx: setattr(obj, "pymesh_sni", name)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.load_cert_chain(CERTS / "workload.pem", CERTS / "workload-key.pem")
    client_ctx.set_alpn_protocols(["http/1.1"])
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="gateway.example")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        for side, out_bio, in_bio in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
            in_bio.write(out_bio.read())
    server.do_handshake()
    return server


def test_connection_info_from_a_mutual_tls_session(tmp_path: Path) -> None:
    server = _handshake(tmp_path)
    info = connection_info(
        _Transport(server), scheme=b"https", original_destination=None, connection_id=7
    )
    assert info.tls and info.tls_version == server.version()
    assert info.requested_server_name == "gateway.example" and info.alpn == "http/1.1"
    assert info.peer_uri_sans == ("spiffe://cluster.local/ns/default/sa/bookinfo-productpage",)
    assert info.peer_dns_sans == ("productpage.default.svc.cluster.local",)
    assert info.peer_subject == "CN=productpage"
    der = x509.load_pem_x509_certificate((CERTS / "workload.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert info.peer_certificate_sha256 == hashlib.sha256(der).hexdigest()
    assert info.original_destination == ("127.0.1.1", 443)  # not redirected: the local address
    assert info.connection_id == 7


def test_plaintext_connection_has_no_tls_fields() -> None:
    info = connection_info(
        _Transport(None), scheme=b"http", original_destination=("10.0.0.1", 9080), connection_id=1
    )
    assert not info.tls and info.peer_uri_sans == () and info.peer_subject is None
    assert info.original_destination == ("10.0.0.1", 9080) and info.remote_host == "127.0.1.100"


def test_access_log_reads_only_stream_info_and_headers() -> None:
    connection = ConnectionInfo(
        remote_address=("127.0.1.100", 40000),
        local_address=("127.0.1.1", 443),
        scheme=b"https",
        requested_server_name="svc.example",
        tls_version="TLSv1.3",
        peer_uri_sans=("spiffe://cluster.local/ns/default/sa/sleep",),
    )
    info = StreamInfo(connection, start_time=100.0, method=b"POST", path=b"/orig")
    info.end_time = 100.25
    info.response_code = 503
    info.add_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
    info.add_response_flag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
    info.upstream_transport_failure_reason = "remote connection failure"
    info.upstream_host = "127.0.1.10:80"
    info.route_name = "r1"
    fmt = (
        "%REQ(:METHOD)% %REQ(:PATH)% %REQ(X-ID)% %RESP(SERVER)% %RESPONSE_CODE% "
        "%RESPONSE_FLAGS% %DURATION% %UPSTREAM_HOST% %ROUTE_NAME% %REQUESTED_SERVER_NAME% "
        "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN% %UPSTREAM_TRANSPORT_FAILURE_REASON% "
        "%DOWNSTREAM_REMOTE_ADDRESS%"
    )
    line = render_format(compile_format(fmt), info, [(b"x-id", b"7")], [(b"server", b"envoy")])
    assert line == (
        "POST /orig 7 envoy 503 URX,UF 250 127.0.1.10:80 r1 svc.example TLSv1.3 "
        "spiffe://cluster.local/ns/default/sa/sleep remote_connection_failure 127.0.1.100:40000"
    )


def test_filter_state_and_metadata_cost_nothing_until_used() -> None:
    info = StreamInfo(ConnectionInfo(), start_time=0.0)
    assert info.metadata_namespaces == ()
    info.dynamic_metadata("envoy.filters.http.rbac")["shadow_effective_policy_id"] = "p1"
    info.filter_state["istio.peer"] = "sleep"
    assert info.metadata_namespaces == ("envoy.filters.http.rbac",)
    assert info.dynamic_metadata("envoy.filters.http.rbac") == {"shadow_effective_policy_id": "p1"}
    assert info.filter_state == {"istio.peer": "sleep"}
