"""TLS contexts from the model's transport sockets (Envoy's ``DownstreamTlsContext`` and
``UpstreamTlsContext``)."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping

import structlog
from cryptography import x509

from proxy.config.model import (
    CertificateValidation,
    CommonTls,
    DownstreamTls,
    Secret,
    TlsCertificate,
    TlsVersion,
    UpstreamTls,
)
from pymesh.errors import ConfigError

log = structlog.get_logger(__name__)

__all__ = [
    "SecretUnavailable",
    "client_context",
    "local_uri_sans",
    "server_context",
    "validation_of",
]


class SecretUnavailable(ConfigError):
    """An SDS secret the context names has not arrived (yet): the listener must warm."""


_VERSIONS = {
    TlsVersion.TLSv1_0: ssl.TLSVersion.TLSv1,
    TlsVersion.TLSv1_1: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}


def _certificates(common: CommonTls, secrets: Mapping[str, Secret]) -> list[TlsCertificate]:
    certs = list(common.tls_certificates)
    for sds in common.tls_certificate_sds:
        secret = secrets.get(sds.name)
        if secret is None or secret.tls_certificate is None:
            raise SecretUnavailable(f"TLS certificate secret '{sds.name}' is not available")
        certs.append(secret.tls_certificate)
    return certs


def _uri_sans(chain: bytes) -> tuple[str, ...]:
    leaf = x509.load_pem_x509_certificates(chain)[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))


def validation_of(common: CommonTls, secrets: Mapping[str, Secret]) -> CertificateValidation | None:
    """The effective validation context: the SDS one, with the inline one's SAN matchers
    and pins added (Envoy's ``combined_validation_context``)."""
    validation = common.validation_context
    ref = common.validation_context_sds
    if ref is None:
        return validation
    secret = secrets.get(ref.name)
    pushed = secret.validation_context if secret is not None else None
    if pushed is None:
        raise SecretUnavailable(f"validation context secret '{ref.name}' is not available")
    if validation is None:
        return pushed
    return CertificateValidation(
        trusted_ca=pushed.trusted_ca,
        trusted_ca_path=pushed.trusted_ca_path,
        match_subject_alt_names=validation.match_subject_alt_names
        or pushed.match_subject_alt_names,
        verify_certificate_spki=validation.verify_certificate_spki
        or pushed.verify_certificate_spki,
        verify_certificate_hash=validation.verify_certificate_hash
        or pushed.verify_certificate_hash,
    )


def _apply_params(context: ssl.SSLContext, common: CommonTls, *, server: bool) -> None:
    params = common.tls_params
    # Envoy's defaults: TLS 1.2 minimum; 1.3 maximum for servers, 1.2 for clients.
    context.minimum_version = _VERSIONS.get(
        params.tls_minimum_protocol_version, ssl.TLSVersion.TLSv1_2
    )
    context.maximum_version = _VERSIONS.get(
        params.tls_maximum_protocol_version,
        ssl.TLSVersion.TLSv1_3 if server else ssl.TLSVersion.TLSv1_2,
    )
    if params.cipher_suites:
        # BoringSSL's equal-preference groups ``[A|B]`` have no OpenSSL spelling: keep order.
        names = ":".join(params.cipher_suites).replace("[", "").replace("]", "").replace("|", ":")
        try:
            context.set_ciphers(names)
        except ssl.SSLError as exc:
            raise ConfigError(f"cipher_suites {names!r}: {exc}") from exc
    if common.alpn_protocols:
        context.set_alpn_protocols(list(common.alpn_protocols))
    # A peer's FIN without close_notify is the end of its stream, as in Envoy, not a fatal
    # error: OpenSSL 3 would otherwise refuse every later write, and the answer to a
    # request that ended that way could not be sent (see proxy.transport.tls_engine).
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF


def _load_chain(context: ssl.SSLContext, cert: TlsCertificate) -> None:
    # The ssl module only loads key pairs from files; PEM bytes go through a private temp dir.
    with tempfile.TemporaryDirectory(prefix="pymesh-tls-") as tmp:
        chain = os.path.join(tmp, "chain.pem")
        key = os.path.join(tmp, "key.pem")
        for path, data in ((chain, cert.certificate_chain), (key, cert.private_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            context.load_cert_chain(chain, key)
        except (ssl.SSLError, ValueError) as exc:
            where = cert.certificate_chain_path or "inline certificate"
            raise ConfigError(f"cannot load TLS certificate ({where}): {exc}") from exc


def server_context(tls: DownstreamTls, secrets: Mapping[str, Secret]) -> ssl.SSLContext:
    """A server-side context: certificates, protocol versions, ALPN, client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_params(context, tls.common, server=True)
    certs = _certificates(tls.common, secrets)
    if not certs:
        raise ConfigError("a downstream TLS context needs at least one certificate")
    for cert in certs:
        _load_chain(context, cert)
    # Python cannot read a connection's own certificate back: its URI SANs (``By=`` of
    # x-forwarded-client-cert) are kept on the context.
    context.pymesh_local_uri_sans = _uri_sans(certs[0].certificate_chain)  # type: ignore[attr-defined]
    validation = validation_of(tls.common, secrets)
    if validation is not None and validation.trusted_ca:
        context.load_verify_locations(cadata=validation.trusted_ca.decode("ascii"))
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    elif tls.require_client_certificate:
        raise ConfigError("require_client_certificate needs a validation context with a CA")
    return context


def client_context(tls: UpstreamTls, secrets: Mapping[str, Secret]) -> ssl.SSLContext:
    """A client-side context. Without a trusted CA the server's certificate is not verified
    (Envoy's behaviour); host names are never checked against the SNI, only the configured
    SAN matchers are (after the handshake, see :mod:`proxy.transport.peer_checks`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _apply_params(context, tls.common, server=False)
    for cert in _certificates(tls.common, secrets):
        _load_chain(context, cert)
    validation = validation_of(tls.common, secrets)
    if validation is not None and validation.trusted_ca:
        context.load_verify_locations(cadata=validation.trusted_ca.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def local_uri_sans(tls: DownstreamTls, secrets: Mapping[str, Secret]) -> tuple[str, ...]:
    """The URI SANs of the chain's own (first) certificate: the workload's SPIFFE identity,
    which access logs report as the local certificate's (Istio's destination principal).
    Python's ssl module cannot tell a server its own certificate, so it is read here."""
    certificate = _certificates(tls.common, secrets)[0]
    try:
        leaf = x509.load_pem_x509_certificates(certificate.certificate_chain)[0]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return ()
    return tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
