"""TLS transport sockets and SDS secrets (``extensions.transport_sockets.tls.v3``)."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from proxy.config.model import (
    CertificateValidation,
    CommonTls,
    DownstreamTls,
    SanMatcher,
    SanType,
    SdsSecretConfig,
    Secret,
    TlsCertificate,
    TlsParameters,
    TlsVersion,
    UpstreamTls,
)
from proxy.config.translate.common import (
    at,
    config_source,
    data_source,
    join,
    opt_duration,
    string_matcher,
    wrapped,
)
from proxy.config.translate.support import check_supported
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "downstream_tls",
    "translate_secret",
    "upstream_tls",
]

_SAN_TYPES = {1: SanType.EMAIL, 2: SanType.DNS, 3: SanType.URI, 4: SanType.IP_ADDRESS}


def translate_secret(proto: secret_pb2.Secret, path: str = "") -> Secret:
    """Translate an SDS ``Secret`` (static or pushed)."""
    check_supported(proto, path)
    kind = proto.WhichOneof("type")
    if kind is None:
        raise ValidationError("secret has no tls_certificate or validation_context", path=path)
    return Secret(
        name=proto.name,
        tls_certificate=(
            _tls_certificate(proto.tls_certificate, join(path, "tls_certificate"))
            if kind == "tls_certificate"
            else None
        ),
        validation_context=(
            _validation(proto.validation_context, join(path, "validation_context"))
            if kind == "validation_context"
            else None
        ),
    )


def downstream_tls(proto: Any, path: str) -> DownstreamTls:
    """A checked ``DownstreamTlsContext``; a server needs a certificate. With
    ``require_client_certificate`` and no validation context, any client certificate is
    accepted unverified (Envoy's behaviour)."""
    common = _common(proto.common_tls_context, join(path, "common_tls_context"), downstream=True)
    if not common.tls_certificates and not common.tls_certificate_sds:
        raise ValidationError(
            "No TLS certificates found for server context", path=join(path, "common_tls_context")
        )
    return DownstreamTls(
        common=common,
        require_client_certificate=wrapped(proto, "require_client_certificate", False),
        session_timeout=opt_duration(proto, "session_timeout"),
        disable_stateless_session_resumption=proto.disable_stateless_session_resumption,
    )


def upstream_tls(proto: Any, path: str) -> UpstreamTls:
    return UpstreamTls(
        common=_common(proto.common_tls_context, join(path, "common_tls_context")),
        sni=proto.sni or None,
        allow_renegotiation=proto.allow_renegotiation,
        max_session_keys=wrapped(proto, "max_session_keys", 1),
    )


def _sds(proto: Any, path: str) -> SdsSecretConfig:
    return SdsSecretConfig(
        name=proto.name,
        config_source=(
            config_source(proto.sds_config, join(path, "sds_config"))
            if proto.HasField("sds_config")
            else None
        ),
    )


def _common(proto: Any, path: str, *, downstream: bool = False) -> CommonTls:
    params = proto.tls_params
    validation = None
    validation_sds = None
    kind = proto.WhichOneof("validation_context_type")
    if kind == "validation_context":
        validation = _validation(proto.validation_context, join(path, kind))
    elif kind == "validation_context_sds_secret_config":
        validation_sds = _sds(proto.validation_context_sds_secret_config, join(path, kind))
    elif kind == "combined_validation_context":
        combined = proto.combined_validation_context
        validation = _validation(
            combined.default_validation_context, join(path, f"{kind}.default_validation_context")
        )
        validation_sds = _sds(
            combined.validation_context_sds_secret_config,
            join(path, f"{kind}.validation_context_sds_secret_config"),
        )
    return CommonTls(
        tls_params=TlsParameters(
            tls_minimum_protocol_version=TlsVersion(
                common_pb2.TlsParameters.TlsProtocol.Name(params.tls_minimum_protocol_version)
            ),
            tls_maximum_protocol_version=TlsVersion(
                common_pb2.TlsParameters.TlsProtocol.Name(params.tls_maximum_protocol_version)
            ),
            cipher_suites=tuple(params.cipher_suites),
            ecdh_curves=tuple(params.ecdh_curves),
        ),
        tls_certificates=tuple(
            _tls_certificate(item, at(join(path, "tls_certificates"), index))
            for index, item in enumerate(proto.tls_certificates)
        ),
        tls_certificate_sds=tuple(
            _sds(item, at(join(path, "tls_certificate_sds_secret_configs"), index))
            for index, item in enumerate(proto.tls_certificate_sds_secret_configs)
        ),
        validation_context=validation,
        validation_context_sds=validation_sds,
        alpn_protocols=tuple(
            _alpn(proto.alpn_protocols, join(path, "alpn_protocols"), downstream=downstream)
        ),
    )


def _alpn(protocols: Any, path: str, *, downstream: bool) -> list[str]:
    # A listener serves a client that picks h2 with HTTP/2 (codec_type AUTO); an upstream
    # connection still speaks HTTP/1.1 only, so it must not let a server pick h2.
    allowed = ("h2", "http/1.1", "http/1.0") if downstream else ("http/1.1", "http/1.0")
    for index, protocol in enumerate(protocols):
        if protocol not in allowed:
            raise UnsupportedError(
                f"ALPN protocol '{protocol}' is not supported by pymesh here "
                f"(supported: {', '.join(allowed)})",
                path=at(path, index),
            )
    return list(protocols)


def _tls_certificate(proto: Any, path: str) -> TlsCertificate:
    chain, chain_path = data_source(proto.certificate_chain, join(path, "certificate_chain"))
    key, key_path = data_source(proto.private_key, join(path, "private_key"))
    try:
        x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise ValidationError(
            f"Failed to load certificate chain from {chain_path or '<inline>'}",
            path=join(path, "certificate_chain"),
        ) from None
    try:
        serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ValidationError(
            f"Failed to load private key from {key_path or '<inline>'}",
            path=join(path, "private_key"),
        ) from None
    return TlsCertificate(chain, key, chain_path, key_path)


def _validation(proto: Any, path: str) -> CertificateValidation:
    trusted_ca = None
    trusted_ca_path = None
    if proto.HasField("trusted_ca"):
        trusted_ca, trusted_ca_path = data_source(proto.trusted_ca, join(path, "trusted_ca"))
        try:
            x509.load_pem_x509_certificates(trusted_ca)
        except ValueError:
            raise ValidationError(
                f"Failed to load trusted CA certificates from {trusted_ca_path or '<inline>'}",
                path=join(path, "trusted_ca"),
            ) from None
    matchers = []
    for index, item in enumerate(proto.match_typed_subject_alt_names):
        item_path = at(join(path, "match_typed_subject_alt_names"), index)
        if item.san_type not in _SAN_TYPES:
            raise UnsupportedError(
                f"SAN type {common_pb2.SubjectAltNameMatcher.SanType.Name(item.san_type)} is not "
                "supported by pymesh",
                path=join(item_path, "san_type"),
            )
        matchers.append(
            SanMatcher(
                _SAN_TYPES[item.san_type], string_matcher(item.matcher, join(item_path, "matcher"))
            )
        )
    for index, item in enumerate(proto.match_subject_alt_names):
        item_path = at(join(path, "match_subject_alt_names"), index)
        matchers.append(SanMatcher(SanType.ANY, string_matcher(item, item_path)))
    return CertificateValidation(
        trusted_ca=trusted_ca,
        trusted_ca_path=trusted_ca_path,
        match_subject_alt_names=tuple(matchers),
        verify_certificate_spki=tuple(proto.verify_certificate_spki),
        verify_certificate_hash=tuple(proto.verify_certificate_hash),
        allow_expired_certificate=proto.allow_expired_certificate,
        accept_untrusted=proto.trust_chain_verification == 1,
    )
