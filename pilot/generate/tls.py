"""Transport sockets: upstream TLS from DestinationRule ``tls`` and downstream TLS for Gateway
servers. Certificates come over SDS (Istio's names: ``default`` / ``ROOTCA`` for the workload
identity, ``kubernetes://<credentialName>`` for gateway credentials) or from files."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pilot.generate.common import ADS, typed
from pymesh.config.model.networking import (
    ClientTLSMode,
    ClientTLSSettings,
    ServerTLSMode,
    ServerTLSSettings,
    TLSProtocol,
)

__all__ = [
    "CA_SUFFIX",
    "CREDENTIAL_PREFIX",
    "ROOT_CA",
    "WORKLOAD_CERT",
    "credential_secret_name",
    "downstream_tls",
    "upstream_tls",
]

WORKLOAD_CERT = "default"
ROOT_CA = "ROOTCA"
CREDENTIAL_PREFIX = "kubernetes://"
#: Istio's convention: the CA of credential ``x`` for MUTUAL is ``x-cacert`` when the Secret
#: itself has no ``ca.crt``.
CA_SUFFIX = "-cacert"
_TLS_SOCKET = "envoy.transport_sockets.tls"
_VERSIONS = {
    TLSProtocol.TLSV1_0: "TLSv1_0",
    TLSProtocol.TLSV1_1: "TLSv1_1",
    TLSProtocol.TLSV1_2: "TLSv1_2",
    TLSProtocol.TLSV1_3: "TLSv1_3",
}


def credential_secret_name(credential: str) -> str:
    return CREDENTIAL_PREFIX + credential


def _sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": ADS}


def _files(cert: str, key: str) -> dict[str, Any]:
    return {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}


def _sans(names: Iterable[str]) -> list[dict[str, Any]]:
    return [{"exact": n} for n in names]


def _socket(kind: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"name": _TLS_SOCKET, "typed_config": typed(kind, context)}


def upstream_tls(
    tls: ClientTLSSettings | None, *, sni: str, istio_sni: str, spiffe_sans: Iterable[str]
) -> dict[str, Any] | None:
    """The cluster transport socket for a DestinationRule ``tls`` block (None = plaintext)."""
    if tls is None or tls.mode is ClientTLSMode.DISABLE:
        return None
    common: dict[str, Any] = {}
    if tls.mode is ClientTLSMode.ISTIO_MUTUAL:
        common["tls_certificate_sds_secret_configs"] = [_sds(WORKLOAD_CERT)]
        validation: dict[str, Any] = {}
        sans = list(tls.subject_alt_names) or sorted(set(spiffe_sans))
        if sans:
            validation["match_subject_alt_names"] = _sans(sans)
        common["combined_validation_context"] = {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": _sds(ROOT_CA),
        }
        common["alpn_protocols"] = ["istio-peer-exchange", "istio"]
        return _socket("upstream_tls", {"common_tls_context": common, "sni": tls.sni or istio_sni})
    if tls.mode is ClientTLSMode.MUTUAL:
        if tls.credential_name:
            name = credential_secret_name(tls.credential_name)
            common["tls_certificate_sds_secret_configs"] = [_sds(name)]
        elif tls.client_certificate and tls.private_key:
            common["tls_certificates"] = [_files(tls.client_certificate, tls.private_key)]
    validation = {}
    if tls.ca_certificates:
        validation["trusted_ca"] = {"filename": tls.ca_certificates}
    if tls.subject_alt_names:
        validation["match_subject_alt_names"] = _sans(tls.subject_alt_names)
    if validation:
        common["validation_context"] = validation
    return _socket("upstream_tls", {"common_tls_context": common, "sni": tls.sni or sni})


def downstream_tls(tls: ServerTLSSettings) -> dict[str, Any] | None:
    """A Gateway server's transport socket (SIMPLE / MUTUAL / OPTIONAL_MUTUAL); None for
    modes that do not terminate TLS."""
    if tls.mode not in (ServerTLSMode.SIMPLE, ServerTLSMode.MUTUAL, ServerTLSMode.OPTIONAL_MUTUAL):
        return None
    common: dict[str, Any] = {"alpn_protocols": ["http/1.1"]}
    params: dict[str, Any] = {}
    if tls.min_protocol_version in _VERSIONS:
        params["tls_minimum_protocol_version"] = _VERSIONS[tls.min_protocol_version]
    if tls.max_protocol_version in _VERSIONS:
        params["tls_maximum_protocol_version"] = _VERSIONS[tls.max_protocol_version]
    if tls.cipher_suites:
        params["cipher_suites"] = list(tls.cipher_suites)
    if params:
        common["tls_params"] = params
    mutual = tls.mode is not ServerTLSMode.SIMPLE
    credentials = tls.credential_names or ((tls.credential_name,) if tls.credential_name else ())
    if credentials:
        names = [credential_secret_name(c) for c in credentials]
        common["tls_certificate_sds_secret_configs"] = [_sds(n) for n in names]
        if mutual:
            ca = tls.ca_cert_credential_name or credentials[0] + CA_SUFFIX
            common["validation_context_sds_secret_config"] = _sds(credential_secret_name(ca))
    else:
        pairs = [(c.server_certificate, c.private_key) for c in tls.tls_certificates]
        if tls.server_certificate and tls.private_key:
            pairs.insert(0, (tls.server_certificate, tls.private_key))
        common["tls_certificates"] = [_files(cert, key) for cert, key in pairs]
        if mutual and tls.ca_certificates:
            validation: dict[str, Any] = {"trusted_ca": {"filename": tls.ca_certificates}}
            if tls.subject_alt_names:
                validation["match_subject_alt_names"] = _sans(tls.subject_alt_names)
            common["validation_context"] = validation
    context: dict[str, Any] = {"common_tls_context": common}
    if tls.mode is ServerTLSMode.MUTUAL:
        context["require_client_certificate"] = True
    return _socket("downstream_tls", context)
