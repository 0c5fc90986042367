"""The peer checks OpenSSL does not make: SAN matchers (typed and the deprecated untyped
ones) and certificate pins, on real certificates."""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.config.model import (
    CertificateValidation,
    SanMatcher,
    SanType,
    StringMatcher,
    StringMatchKind,
)
from proxy.transport.peer_checks import PeerCheckFailure, check_peer, peer_sans
from tests.support.certs import self_signed
from tests.support.mesh_pki import MeshPki


def _der(pem: bytes | str) -> bytes:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificates(data)[0].public_bytes(serialization.Encoding.DER)


def _exact(value: str) -> StringMatcher:
    return StringMatcher(StringMatchKind.EXACT, value.encode())


WORKLOAD = _der(MeshPki().workload("foo", "httpbin").chain)
WEB = _der(self_signed("*.example.com", "127.0.0.9")[0])


def test_sans_by_type() -> None:
    assert peer_sans(WORKLOAD)[SanType.URI] == ("spiffe://cluster.local/ns/foo/sa/httpbin",)
    assert peer_sans(WEB)[SanType.DNS] == ("*.example.com",)
    assert peer_sans(WEB)[SanType.IP_ADDRESS] == ("127.0.0.9",)


def test_uri_san_matchers() -> None:
    uri = "spiffe://cluster.local/ns/foo/sa/httpbin"
    ok = CertificateValidation(match_subject_alt_names=(SanMatcher(SanType.URI, _exact(uri)),))
    assert check_peer(WORKLOAD, ok) is None
    other = CertificateValidation(
        match_subject_alt_names=(
            SanMatcher(SanType.URI, _exact("spiffe://cluster.local/ns/foo/sa/sleep")),
        )
    )
    assert check_peer(WORKLOAD, other) is PeerCheckFailure.SAN
    # A DNS matcher never matches a URI SAN with the same text.
    dns = CertificateValidation(match_subject_alt_names=(SanMatcher(SanType.DNS, _exact(uri)),))
    assert check_peer(WORKLOAD, dns) is PeerCheckFailure.SAN
    # Any of several matchers is enough (Istio lists every service account of a service).
    both = CertificateValidation(
        match_subject_alt_names=(*other.match_subject_alt_names, *ok.match_subject_alt_names)
    )
    assert check_peer(WORKLOAD, both) is None
    regex = StringMatcher(
        StringMatchKind.REGEX, b"", regex=re.compile(rb"spiffe://cluster\.local/ns/foo/.*")
    )
    assert (
        check_peer(
            WORKLOAD,
            CertificateValidation(match_subject_alt_names=(SanMatcher(SanType.URI, regex),)),
        )
        is None
    )


def test_untyped_matchers_and_wildcard_dns() -> None:
    any_type = CertificateValidation(
        match_subject_alt_names=(SanMatcher(SanType.ANY, _exact("www.example.com")),)
    )
    assert check_peer(WEB, any_type) is None  # *.example.com covers one label
    deeper = CertificateValidation(
        match_subject_alt_names=(SanMatcher(SanType.ANY, _exact("a.b.example.com")),)
    )
    assert check_peer(WEB, deeper) is PeerCheckFailure.SAN
    ip = CertificateValidation(
        match_subject_alt_names=(SanMatcher(SanType.IP_ADDRESS, _exact("127.0.0.9")),)
    )
    assert check_peer(WEB, ip) is None


def test_pins_and_missing_certificate() -> None:
    digest = hashlib.sha256(WORKLOAD).hexdigest()
    colons = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()
    assert check_peer(WORKLOAD, CertificateValidation(verify_certificate_hash=(colons,))) is None
    assert (
        check_peer(WEB, CertificateValidation(verify_certificate_hash=(digest,)))
        is PeerCheckFailure.PIN
    )
    spki = (
        x509.load_der_x509_certificate(WORKLOAD)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert check_peer(WORKLOAD, CertificateValidation(verify_certificate_spki=(pin,))) is None
    assert check_peer(None, CertificateValidation(verify_certificate_spki=(pin,))) is (
        PeerCheckFailure.NO_CERTIFICATE
    )
    assert check_peer(None, CertificateValidation()) is None
