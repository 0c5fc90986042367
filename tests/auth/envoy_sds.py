"""Envoy configuration pieces for identity tests, in Istio's shape: SDS references to
``default`` / ``ROOTCA`` through the ``sds-grpc`` cluster
(:func:`tests.support.envoy.sds_cluster`), and TLS contexts."""

from __future__ import annotations

from typing import Any

__all__ = ["downstream_mtls", "sds_secret", "upstream_mtls"]

_TLS = "envoy.transport_sockets.tls"
_PREFIX = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def sds_secret(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "initial_fetch_timeout": "0s",
            "resource_api_version": "V3",
        },
    }


def _common(sans: list[str] | None) -> dict[str, Any]:
    validation: dict[str, Any] = {}
    if sans:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": s}} for s in sans
        ]
    return {
        "tls_certificate_sds_secret_configs": [sds_secret("default")],
        "combined_validation_context": {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": sds_secret("ROOTCA"),
        },
    }


def downstream_mtls(sans: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": _TLS,
        "typed_config": {
            "@type": _PREFIX + "DownstreamTlsContext",
            "common_tls_context": _common(sans),
            "require_client_certificate": True,
        },
    }


def upstream_mtls(sni: str, sans: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": _TLS,
        "typed_config": {
            "@type": _PREFIX + "UpstreamTlsContext",
            "common_tls_context": {**_common(sans), "alpn_protocols": ["istio"]},
            "sni": sni,
        },
    }
