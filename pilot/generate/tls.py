"""Transport sockets: upstream TLS from DestinationRule ``tls`` (and auto mTLS), downstream
mTLS for inbound listeners and TLS for Gateway servers.

Certificates come over SDS under Istio's names: ``default`` / ``ROOTCA`` (the workload
identity) from the agent, through the bootstrap's ``sds-grpc`` cluster (its Unix socket), as
Istio's sidecars get them; ``kubernetes://<credentialName>`` (gateway and DestinationRule
credentials) from pilot over ADS; or from files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    "AGENT_SDS",
    "ALPN_ISTIO",
    "CA_SUFFIX",
    "CREDENTIAL_PREFIX",
    "ROOT_CA",
    "SDS_CLUSTER",
    "TLS_MODE_LABEL",
    "TRANSPORT_SOCKET_MATCH",
    "WORKLOAD_CERT",
    "auto_mtls_matches",
    "credential_secret_name",
    "downstream_tls",
    "inbound_mtls",
    "istio_mutual",
    "speaks_mtls",
    "upstream_tls",
]

WORKLOAD_CERT = "default"
ROOT_CA = "ROOTCA"
#: The bootstrap cluster on the agent's SDS socket.
SDS_CLUSTER = "sds-grpc"
#: Set on a pod by Istio's injector (``istio``): its sidecar speaks Istio mTLS. Endpoints
#: with it get ``tlsMode: istio`` metadata, which auto mTLS matches on.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
#: What a client sidecar offers: ``istio`` is how the server's TLS inspector tells mesh mTLS
#: apart from an application's own TLS.
ALPN_ISTIO = ["istio-peer-exchange", "istio"]
AGENT_SDS: dict[str, Any] = {
    "api_config_source": {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        "set_node_on_first_message_only": True,
    },
    "initial_fetch_timeout": "0s",
    "resource_api_version": "V3",
}
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


def speaks_mtls(labels: Mapping[str, str]) -> bool:
    """Whether a pod's sidecar speaks Istio mTLS (the injector's ``tlsMode: istio`` label)."""
    return labels.get(TLS_MODE_LABEL) == "istio"


def credential_secret_name(credential: str) -> str:
    return CREDENTIAL_PREFIX + credential


def _sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": ADS}


def _agent_sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": AGENT_SDS}


def _mesh_common(sans: Iterable[str]) -> dict[str, Any]:
    """The workload identity and the mesh root, with peers' SPIFFE IDs to match (any mesh
    identity when there are none)."""
    validation: dict[str, Any] = {}
    uris = sorted(set(sans))
    if uris:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": uri}} for uri in uris
        ]
    return {
        "tls_certificate_sds_secret_configs": [_agent_sds(WORKLOAD_CERT)],
        "combined_validation_context": {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": _agent_sds(ROOT_CA),
        },
    }


def istio_mutual(sni: str, sans: Iterable[str]) -> dict[str, Any]:
    """``ISTIO_MUTUAL``: the cluster socket of sidecar-to-sidecar mTLS."""
    common = _mesh_common(sans)
    common["alpn_protocols"] = list(ALPN_ISTIO)
    return _socket("upstream_tls", {"common_tls_context": common, "sni": sni})


def auto_mtls_matches(sni: str, sans: Iterable[str]) -> list[dict[str, Any]]:
    """Auto mTLS (a cluster without DestinationRule TLS): ISTIO_MUTUAL to endpoints whose
    metadata says ``tlsMode: istio``, plaintext to the rest."""
    return [
        {
            "name": "tlsMode-istio",
            "match": {"tlsMode": "istio"},
            "transport_socket": istio_mutual(sni, sans),
        },
        {
            "name": "tlsMode-disabled",
            "match": {},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": typed("raw_buffer"),
            },
        },
    ]


def inbound_mtls(*, http: bool) -> dict[str, Any]:
    """The server side of mesh mTLS: a client certificate from the mesh root is required."""
    common = _mesh_common(())
    common["alpn_protocols"] = ["h2", "http/1.1"] if http else ["istio-peer-exchange", "istio"]
    common["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_2"}
    return _socket(
        "downstream_tls", {"common_tls_context": common, "require_client_certificate": True}
    )


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
        return istio_mutual(tls.sni or istio_sni, tls.subject_alt_names or spiffe_sans)
    if tls.mode is ClientTLSMode.MUTUAL:
        if tls.credential_name:
            name = credential_secret_name(tls.credential_name)
            common["tls_certificate_sds_secret_configs"] = [_sds(name)]
        elif tls.client_certificate and tls.private_key:
            common["tls_certificates"] = [_files(tls.client_certificate, tls.private_key)]
    validation: dict[str, Any] = {}
    if tls.subject_alt_names:
        validation["match_subject_alt_names"] = _sans(tls.subject_alt_names)
    if tls.credential_name:
        # Istio: the CA of credential ``x`` is ``x-cacert`` (its ``ca.crt``), from pilot.
        ca = credential_secret_name(tls.credential_name + CA_SUFFIX)
        common["combined_validation_context"] = {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": _sds(ca),
        }
    else:
        if tls.ca_certificates:
            validation["trusted_ca"] = {"filename": tls.ca_certificates}
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
