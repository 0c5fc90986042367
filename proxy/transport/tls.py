"""TLS contexts from the model's transport sockets (Envoy's ``DownstreamTlsContext``)."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping

from proxy.config.model import DownstreamTls, Secret, TlsCertificate, TlsVersion
from pymesh.errors import ConfigError

__all__ = ["SecretUnavailable", "local_uri_sans", "server_context"]


class SecretUnavailable(ConfigError):
    """An SDS secret the context names has not arrived (yet): the listener must warm."""


_VERSIONS = {
    TlsVersion.TLSv1_0: ssl.TLSVersion.TLSv1,
    TlsVersion.TLSv1_1: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}


def _certificates(tls: DownstreamTls, secrets: Mapping[str, Secret]) -> list[TlsCertificate]:
    certs = list(tls.common.tls_certificates)
    for sds in tls.common.tls_certificate_sds:
        secret = secrets.get(sds.name)
        if secret is None or secret.tls_certificate is None:
            raise SecretUnavailable(f"TLS certificate secret '{sds.name}' is not available")
        certs.append(secret.tls_certificate)
    if not certs:
        raise ConfigError("a downstream TLS context needs at least one certificate")
    return certs


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
    params = tls.common.tls_params
    # Envoy's defaults: TLS 1.2 minimum for servers, 1.3 maximum.
    context.minimum_version = _VERSIONS.get(
        params.tls_minimum_protocol_version, ssl.TLSVersion.TLSv1_2
    )
    context.maximum_version = _VERSIONS.get(
        params.tls_maximum_protocol_version, ssl.TLSVersion.TLSv1_3
    )
    for cert in _certificates(tls, secrets):
        _load_chain(context, cert)
    if tls.common.alpn_protocols:
        context.set_alpn_protocols(list(tls.common.alpn_protocols))
    validation = tls.common.validation_context
    if tls.common.validation_context_sds is not None:
        secret = secrets.get(tls.common.validation_context_sds.name)
        validation = secret.validation_context if secret is not None else None
        if validation is None:
            raise SecretUnavailable(
                f"validation context secret '{tls.common.validation_context_sds.name}' "
                "is not available"
            )
    if validation is not None and validation.trusted_ca:
        context.load_verify_locations(cadata=validation.trusted_ca.decode("ascii"))
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    elif tls.require_client_certificate:
        raise ConfigError("require_client_certificate needs a validation context with a CA")
    return context


def local_uri_sans(tls: DownstreamTls, secrets: Mapping[str, Secret]) -> tuple[str, ...]:
    """The URI SANs of the chain's own (first) certificate: the workload's SPIFFE identity,
    which access logs report as the local certificate's (Istio's destination principal).
    Python's ssl module cannot tell a server its own certificate, so it is read here."""
    from cryptography import x509  # only for a chain that reports its identity

    certificate = _certificates(tls, secrets)[0]
    try:
        leaf = x509.load_pem_x509_certificates(certificate.certificate_chain)[0]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return ()
    return tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
