"""TLS transport sockets and SDS secrets (``extensions.transport_sockets.tls.v3``).

Certificates and keys are PEM ``bytes`` read at translation time (as Envoy reads them at load);
``*_path`` keeps the file name when there was one, for reloading and for messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxy.config.model_common import ConfigSource, StringMatcher

__all__ = [
    "CertificateValidation",
    "CommonTls",
    "DownstreamTls",
    "SanMatcher",
    "SanType",
    "SdsSecretConfig",
    "Secret",
    "TlsCertificate",
    "TlsParameters",
    "TlsVersion",
    "TransportSocketMatch",
    "UpstreamTls",
]


class TlsVersion(StrEnum):
    TLS_AUTO = "TLS_AUTO"
    TLSv1_0 = "TLSv1_0"
    TLSv1_1 = "TLSv1_1"
    TLSv1_2 = "TLSv1_2"
    TLSv1_3 = "TLSv1_3"


@dataclass(frozen=True, slots=True)
class TlsParameters:
    """``TLS_AUTO`` means Envoy's default: min TLSv1_2 (both sides), max TLSv1_3 (server) /
    TLSv1_2 (client)."""

    tls_minimum_protocol_version: TlsVersion = TlsVersion.TLS_AUTO
    tls_maximum_protocol_version: TlsVersion = TlsVersion.TLS_AUTO
    cipher_suites: tuple[str, ...] = ()
    ecdh_curves: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    certificate_chain: bytes
    private_key: bytes
    certificate_chain_path: str | None = None
    private_key_path: str | None = None


class SanType(StrEnum):
    ANY = "ANY"  # the deprecated untyped match_subject_alt_names: DNS, URI, email or IP
    DNS = "DNS"
    EMAIL = "EMAIL"
    URI = "URI"
    IP_ADDRESS = "IP_ADDRESS"


@dataclass(frozen=True, slots=True)
class SanMatcher:
    san_type: SanType
    matcher: StringMatcher


@dataclass(frozen=True, slots=True)
class CertificateValidation:
    """Peer certificate checks. With ``trusted_ca=None`` the peer certificate is not
    verified (Envoy's behaviour). The peer passes when any SAN matcher matches (or there are
    none)."""

    trusted_ca: bytes | None = None
    trusted_ca_path: str | None = None
    match_subject_alt_names: tuple[SanMatcher, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    allow_expired_certificate: bool = False
    accept_untrusted: bool = False


@dataclass(frozen=True, slots=True)
class SdsSecretConfig:
    """A secret by name: from ``static_resources.secrets`` when ``config_source`` is None,
    otherwise fetched over ADS."""

    name: str
    config_source: ConfigSource | None = None


@dataclass(frozen=True, slots=True)
class CommonTls:
    """``CommonTlsContext``. When both ``validation_context`` and
    ``validation_context_sds`` are set (``combined_validation_context``), the SDS secret's
    validation is used with ``validation_context``'s SAN matchers added."""

    tls_params: TlsParameters = field(default_factory=TlsParameters)
    tls_certificates: tuple[TlsCertificate, ...] = ()
    tls_certificate_sds: tuple[SdsSecretConfig, ...] = ()
    validation_context: CertificateValidation | None = None
    validation_context_sds: SdsSecretConfig | None = None
    alpn_protocols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DownstreamTls:
    """``DownstreamTlsContext``: the listener side."""

    common: CommonTls = field(default_factory=CommonTls)
    require_client_certificate: bool = False
    session_timeout: float | None = None
    disable_stateless_session_resumption: bool = False


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """``UpstreamTlsContext``: the cluster side. ``sni`` None sends no SNI (unless the
    cluster's protocol options ask for auto SNI); ``max_session_keys`` default 1."""

    common: CommonTls = field(default_factory=CommonTls)
    sni: str | None = None
    allow_renegotiation: bool = False
    max_session_keys: int = 1


@dataclass(frozen=True, slots=True)
class TransportSocketMatch:
    """A cluster's ``transport_socket_matches`` entry: hosts whose
    ``envoy.transport_socket_match`` metadata holds every key/value of ``match`` use
    ``transport_socket`` (None = plaintext). The first match wins (Istio's auto mTLS)."""

    name: str
    match: Mapping[str, object]
    transport_socket: UpstreamTls | None = None


@dataclass(frozen=True, slots=True)
class Secret:
    """An SDS secret: a certificate with its key, or a validation context."""

    name: str
    tls_certificate: TlsCertificate | None = None
    validation_context: CertificateValidation | None = None
