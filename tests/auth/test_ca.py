"""Signing: Istio's workload certificate shape, the CSR checks and TTL rules, and
``openssl verify`` on every chain (self-signed root and a company intermediate)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.ca import CaSettings, CertificateAuthority, parse_csr
from auth.store import self_signed_root
from pymesh.errors import InvalidRequestError
from pymesh.identity import SpiffeId
from tests.auth.pki import company_ca, csr_pem, openssl_verify

SLEEP = SpiffeId("cluster.local", "foo", "sleep")


@pytest.fixture(scope="module")
def root_ca() -> CertificateAuthority:
    material = self_signed_root("cluster.local", time.time)
    return CertificateAuthority(material, CaSettings(), time.time)


def _leaf(chain: tuple[str, ...]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(chain[0].encode())


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)],
    ids=["ecdsa-p256", "rsa-2048"],
)
def test_signs_istio_shaped_workload_certificate(root_ca, key, tmp_path: Path) -> None:
    request = parse_csr(csr_pem(key, uri=SLEEP.uri))
    chain = root_ca.sign_workload(request, SLEEP, root_ca.lifetime(0))
    leaf = _leaf(chain)
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty (RFC 5280)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SLEEP.uri]
    assert len(list(san.value)) == 1
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.public_key() == key.public_key()
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 24 * 3600 <= lifetime.total_seconds() <= 24 * 3600 + 120
    assert chain[-1] == root_ca.root_pem
    assert "OK" in openssl_verify(tmp_path, root_ca.root_pem, chain)
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName"],
        input=chain[0], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"URI:{SLEEP.uri}" in text


def test_chain_under_a_company_intermediate_verifies_against_the_company_root(
    tmp_path: Path,
) -> None:
    material = company_ca()
    ca = CertificateAuthority(material, CaSettings(), time.time)
    chain = ca.sign_workload(parse_csr(csr_pem(uri=SLEEP.uri)), SLEEP, 3600)
    assert len(chain) == 3  # leaf, intermediate, root
    assert "OK" in openssl_verify(tmp_path, material.root_pem, chain)
    other = company_ca("Other Corp", intermediate=False)
    with pytest.raises(AssertionError, match="verification failed"):
        openssl_verify(tmp_path, other.root_pem, chain)


def test_ttl_default_cap_and_negative() -> None:
    ca = CertificateAuthority(
        self_signed_root("cluster.local", time.time), CaSettings(max_ttl=48 * 3600), time.time
    )
    assert ca.lifetime(0) == 24 * 3600
    assert ca.lifetime(3) == 3
    assert ca.lifetime(10**9) == 48 * 3600
    with pytest.raises(InvalidRequestError, match="negative"):
        ca.lifetime(-1)


def test_never_outlives_the_signing_certificate() -> None:
    material = company_ca(days=1)
    ca = CertificateAuthority(material, CaSettings(max_ttl=10**9), time.time)
    chain = ca.sign_workload(parse_csr(csr_pem(uri=SLEEP.uri)), SLEEP, 10**8)
    assert _leaf(chain).not_valid_after_utc <= material.cert.not_valid_after_utc


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        ("not a csr", "not a PEM certificate signing request"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
         "not a PEM"),
        (csr_pem(sans=[]), "no subject alternative name"),
        (csr_pem(sans=[x509.DNSName("sleep.foo.svc")]), "is not a SPIFFE URI"),
        (csr_pem(sans=[x509.UniformResourceIdentifier(SLEEP.uri), x509.DNSName("x")]),
         "is not a SPIFFE URI"),
        (csr_pem(uri="https://example.com/sleep"), "is not a SPIFFE ID"),
        (csr_pem(uri="spiffe://cluster.local/sleep"), "not an Istio workload ID"),
        (csr_pem(rsa.generate_private_key(65537, 1024), uri=SLEEP.uri), "1024 bits"),
        (csr_pem(ec.generate_private_key(ec.SECP521R1()), uri=SLEEP.uri), "secp521r1"),
        (csr_pem(dsa.generate_private_key(2048), uri=SLEEP.uri), "DSAPublicKey"),
    ],
    ids=[
        "garbage", "bad-der", "no-san", "dns-san", "extra-dns-san", "https-uri",
        "not-workload-id", "rsa-1024", "p521", "dsa",
    ],
)  # fmt: skip
def test_bad_csrs_are_invalid_argument(csr: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_csr(csr)


def test_tampered_csr_signature_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    good = x509.load_pem_x509_csr(csr_pem(uri=SLEEP.uri).encode())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(InvalidRequestError, match="signature"):
        parse_csr(bad)
