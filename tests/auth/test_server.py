"""The CA over its real wire: grpcio clients over TLS, each verdict with its gRPC status,
nothing signed on error, renewal over mTLS, and the CA still serving after every refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from auth.workload import KeyType, WorkloadCertificate, make_csr, new_key
from pymesh.errors import (
    AuthenticationError,
    ControlPlaneError,
    InvalidRequestError,
    PermissionDeniedError,
)
from pymesh.identity import SpiffeId
from pymesh.proto import ca_pb2, ca_pb2_grpc
from tests.auth.conftest import RunningCa
from tests.auth.pki import company_ca, csr_pem, openssl_verify

SLEEP = SpiffeId("cluster.local", "foo", "sleep")
HTTPBIN = SpiffeId("cluster.local", "foo", "httpbin")


async def _issue(ca: RunningCa, identity: SpiffeId = SLEEP, kind=KeyType.EC_P256):
    key = new_key(kind)
    token = ca.issuer.issue(identity.namespace, identity.service_account)
    chain = await ca.client().create_certificate(make_csr(key, identity), 3600, token=token)
    return WorkloadCertificate.from_response(identity, key, chain, ca.root)


@pytest.mark.parametrize("kind", list(KeyType))
async def test_token_gets_a_chain_openssl_verifies(ca: RunningCa, kind, tmp_path: Path) -> None:
    cert = await _issue(ca, kind=kind)
    assert "OK" in openssl_verify(tmp_path, ca.root, cert.chain)
    assert cert.not_after - cert.not_before == pytest.approx(3600 + 60, abs=2)
    assert ca.service.stats.success_cert_issuance_count == 1


async def test_raw_grpcio_stub_and_status_codes(ca: RunningCa) -> None:
    """What any gRPC client of Istio's API sees: the generated stub, status codes."""
    creds = grpc.ssl_channel_credentials(ca.root.encode())
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    token = ca.issuer.issue("foo", "sleep")
    cases = [
        (csr_pem(uri=HTTPBIN.uri), token, grpc.StatusCode.PERMISSION_DENIED),
        (csr_pem(uri="spiffe://x.td/ns/foo/sa/sleep"), token, grpc.StatusCode.PERMISSION_DENIED),
        ("garbage", token, grpc.StatusCode.INVALID_ARGUMENT),
        (csr_pem(sans=[x509.DNSName("sleep")]), token, grpc.StatusCode.INVALID_ARGUMENT),
        (csr_pem(uri=SLEEP.uri), None, grpc.StatusCode.UNAUTHENTICATED),
        (csr_pem(uri=SLEEP.uri), "forged.token.value", grpc.StatusCode.UNAUTHENTICATED),
        (csr_pem(uri=SLEEP.uri), token, grpc.StatusCode.OK),
    ]  # fmt: skip
    async with grpc.aio.secure_channel(ca.address, creds, options) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        for csr, tok, expected in cases:
            metadata = (("authorization", f"Bearer {tok}"),) if tok else ()
            request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=600)
            try:
                reply = await stub.CreateCertificate(request, metadata=metadata, timeout=10)
                code = grpc.StatusCode.OK
                assert len(reply.cert_chain) == 2
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            assert code == expected, (csr[:40], tok)
    stats = ca.service.stats
    assert stats.success_cert_issuance_count == 1  # nothing signed for the six refusals
    assert stats.refused == {"PERMISSION_DENIED": 2, "INVALID_ARGUMENT": 2, "UNAUTHENTICATED": 2}


async def test_verdicts_through_the_client(ca: RunningCa) -> None:
    client = ca.client()
    token = ca.issuer.issue("foo", "sleep")
    with pytest.raises(PermissionDeniedError, match="may not request a certificate for"):
        await client.create_certificate(make_csr(new_key(), HTTPBIN), 0, token=token)
    with pytest.raises(InvalidRequestError, match="negative"):
        await client.create_certificate(make_csr(new_key(), SLEEP), -5, token=token)
    with pytest.raises(AuthenticationError, match="no credential"):
        await client.create_certificate(make_csr(new_key(), SLEEP), 0)
    expired = ca.issuer.issue("foo", "sleep", ttl=-10)
    with pytest.raises(AuthenticationError, match="expired"):
        await client.create_certificate(make_csr(new_key(), SLEEP), 0, token=expired)
    other_audience = ca.issuer.issue("foo", "sleep", audiences=["kubernetes"])
    with pytest.raises(AuthenticationError, match="audience"):
        await client.create_certificate(make_csr(new_key(), SLEEP), 0, token=other_audience)
    assert (await _issue(ca)).identity == SLEEP  # still serving


async def test_renewal_with_the_current_certificate_over_mtls(ca: RunningCa) -> None:
    current = await _issue(ca)
    key = new_key()
    chain = await ca.client().create_certificate(make_csr(key, SLEEP), 600, client=current)
    renewed = WorkloadCertificate.from_response(SLEEP, key, chain, ca.root)
    assert renewed.serial != current.serial
    # A certificate proves its own identity only.
    with pytest.raises(PermissionDeniedError):
        await ca.client().create_certificate(make_csr(new_key(), HTTPBIN), 600, client=current)


async def test_certificate_from_another_root_cannot_renew(ca: RunningCa) -> None:
    import time

    from auth.ca import CaSettings, CertificateAuthority, parse_csr

    other = CertificateAuthority(company_ca(intermediate=False), CaSettings(), time.time)
    key = new_key()
    chain = other.sign_workload(parse_csr(make_csr(key, SLEEP)), SLEEP, 600)
    foreign = WorkloadCertificate.from_response(SLEEP, key, chain, other.root_pem)
    with pytest.raises(ControlPlaneError):  # the TLS handshake itself fails
        await ca.client().create_certificate(make_csr(new_key(), SLEEP), 600, client=foreign)
    assert (await _issue(ca)).identity == SLEEP


async def test_client_checks_what_the_ca_returns(ca: RunningCa) -> None:
    key = new_key()
    token = ca.issuer.issue("foo", "sleep")
    chain = await ca.client().create_certificate(make_csr(key, SLEEP), 0, token=token)
    with pytest.raises(ControlPlaneError, match="another key"):
        stranger = ec.generate_private_key(ec.SECP256R1())
        WorkloadCertificate.from_response(SLEEP, stranger, chain, ca.root)
    with pytest.raises(ControlPlaneError, match="not spiffe"):
        WorkloadCertificate.from_response(HTTPBIN, key, chain, ca.root)
    with pytest.raises(ControlPlaneError, match="empty"):
        WorkloadCertificate.from_response(SLEEP, key, [], ca.root)


async def test_ca_is_unreachable_or_untrusted(ca: RunningCa) -> None:
    wrong_root = company_ca(intermediate=False).root_pem
    from auth.workload import CaClient

    with pytest.raises(ControlPlaneError, match="UNAVAILABLE"):
        await CaClient(ca.address, wrong_root).create_certificate(
            make_csr(new_key(), SLEEP), 0, token=ca.issuer.issue("foo", "sleep"), timeout=5
        )
    await ca.server.stop()
    with pytest.raises(ControlPlaneError, match="UNAVAILABLE"):
        await ca.client().create_certificate(
            make_csr(new_key(), SLEEP), 0, token=ca.issuer.issue("foo", "sleep"), timeout=5
        )


async def test_openssl_s_client_sees_the_ca_certificate(ca: RunningCa, tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_text(ca.root)
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", ca.address, "-CAfile", str(tmp_path / "root.pem"),
        "-alpn", "h2", "-verify_hostname", "istiod.istio-system.svc", "-verify_return_error",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace") + err.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text, text
    assert "ALPN protocol: h2" in text
