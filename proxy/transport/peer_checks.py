"""The peer-certificate checks of Envoy's default certificate validator that OpenSSL, as
Python's ssl module drives it, does not make: SAN matchers and certificate pins.

Pure: DER bytes and a :class:`~proxy.config.model.CertificateValidation` in, a verdict out.
The chain itself (trust, validity dates) is OpenSSL's job during the handshake.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.config.model import CertificateValidation, SanMatcher, SanType, StringMatchKind

__all__ = ["PeerCheckFailure", "check_peer", "peer_sans"]


class PeerCheckFailure(enum.Enum):
    """Which check refused the peer; the values are Envoy's ``ssl.*`` counter names."""

    NO_CERTIFICATE = "fail_verify_no_cert"
    SAN = "fail_verify_san"
    PIN = "fail_verify_cert_hash"


def peer_sans(der: bytes) -> dict[SanType, tuple[str, ...]]:
    """The certificate's subject alternative names by type (IPs as text)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    return {
        SanType.DNS: tuple(ext.get_values_for_type(x509.DNSName)),
        SanType.URI: tuple(ext.get_values_for_type(x509.UniformResourceIdentifier)),
        SanType.EMAIL: tuple(ext.get_values_for_type(x509.RFC822Name)),
        SanType.IP_ADDRESS: tuple(str(ip) for ip in ext.get_values_for_type(x509.IPAddress)),
    }


def check_peer(der: bytes | None, validation: CertificateValidation) -> PeerCheckFailure | None:
    """None when the peer certificate passes every configured check (or none is set)."""
    needs_cert = bool(
        validation.match_subject_alt_names
        or validation.verify_certificate_hash
        or validation.verify_certificate_spki
    )
    if not needs_cert:
        return None
    if not der:
        return PeerCheckFailure.NO_CERTIFICATE
    # Envoy: the certificate passes when it matches any configured pin (hash or SPKI) ...
    if (validation.verify_certificate_hash or validation.verify_certificate_spki) and not (
        _hash_pinned(der, validation.verify_certificate_hash)
        or _spki_pinned(der, validation.verify_certificate_spki)
    ):
        return PeerCheckFailure.PIN
    # ... and any SAN matcher.
    if validation.match_subject_alt_names and not _san_matches(
        peer_sans(der), validation.match_subject_alt_names
    ):
        return PeerCheckFailure.SAN
    return None


def _hash_pinned(der: bytes, pins: tuple[str, ...]) -> bool:
    digest = hashlib.sha256(der).hexdigest()
    # Envoy accepts the hex digest with or without colons, in either case.
    return any(pin.replace(":", "").lower() == digest for pin in pins)


def _spki_pinned(der: bytes, pins: tuple[str, ...]) -> bool:
    if not pins:
        return False
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    digest = base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
    return digest in pins


def _san_matches(sans: dict[SanType, tuple[str, ...]], matchers: tuple[SanMatcher, ...]) -> bool:
    for m in matchers:
        kinds = (
            (SanType.DNS, SanType.URI, SanType.EMAIL, SanType.IP_ADDRESS)
            if m.san_type is SanType.ANY
            else (m.san_type,)
        )
        for kind in kinds:
            for value in sans.get(kind, ()):
                if kind is SanType.DNS and _dns_matches(value, m):
                    return True
                if kind is SanType.IP_ADDRESS and m.matcher.matches(_canonical_ip(value)):
                    return True
                if m.matcher.matches(value.encode()):
                    return True
    return False


def _dns_matches(san: str, m: SanMatcher) -> bool:
    # Envoy lets a wildcard DNS SAN (``*.example.com``) satisfy an exact matcher for a name
    # one label under it.
    if not san.startswith("*.") or m.matcher.kind is not StringMatchKind.EXACT:
        return False
    wanted = m.matcher.value.decode("ascii", "replace")
    head, dot, rest = wanted.partition(".")
    return bool(head) and bool(dot) and rest.lower() == san[2:].lower()


def _canonical_ip(value: str) -> bytes:
    return str(ipaddress.ip_address(value)).encode()
