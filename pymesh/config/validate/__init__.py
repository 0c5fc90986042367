"""Single-resource validation, the checks Istio's admission webhook (and the API server, for the
fields pymesh reads) would make. Cross-resource checks live in :mod:`pymesh.config.analyze`.

Errors raise :class:`pymesh.errors.ValidationError` through the :class:`Reporter`, naming the
field path; warnings are collected on the reporter.
"""

from __future__ import annotations

import re
from typing import Any

from pymesh.config import hosts
from pymesh.config.enforcement import report_not_enforced
from pymesh.config.issues import Reporter
from pymesh.config.model.common import Resource
from pymesh.config.model.kube import ConfigMap, Deployment, PodSpec, Service
from pymesh.config.model.networking import (
    DestinationRule,
    EnvoyFilter,
    Gateway,
    ServiceEntry,
    Sidecar,
    VirtualService,
    WorkloadEntry,
)
from pymesh.config.model.security import (
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
)
from pymesh.config.model.telemetry import Telemetry
from pymesh.config.validate._common import check_labels
from pymesh.config.validate._destination_rule import validate_destination_rule
from pymesh.config.validate._edges import (
    validate_gateway,
    validate_service_entry,
    validate_sidecar,
    validate_workload_entry,
)
from pymesh.config.validate._extensions import (
    validate_config_map,
    validate_envoy_filter,
    validate_telemetry,
)
from pymesh.config.validate._kube import validate_deployment, validate_pod_spec, validate_service
from pymesh.config.validate._security import (
    validate_authorization_policy,
    validate_peer_authentication,
    validate_request_authentication,
)
from pymesh.config.validate._virtual_service import validate_virtual_service

__all__ = ["validate_metadata", "validate_resource", "validate_spec"]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def validate_metadata(res: Resource[Any], rep: Reporter) -> None:
    name = res.name
    if res.kind == "Service":
        # Service names become DNS labels, so they must start with a letter (RFC 1035).
        if len(name) > 63 or not _DNS1035_LABEL.match(name):
            rep.fail("metadata.name", f"invalid Service name {name!r} (a DNS-1035 label)")
    elif res.kind == "Namespace":
        if not hosts.is_dns1123_label(name) or name != name.lower():
            rep.fail("metadata.name", f"invalid namespace name {name!r} (a DNS-1123 label)")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        rep.fail(
            "metadata.name",
            f"invalid name {name!r} (a DNS-1123 subdomain: lower-case letters, digits, '-', '.')",
        )
    if res.kind not in Resource.CLUSTER_SCOPED and (
        not hosts.is_dns1123_label(res.namespace) or res.namespace != res.namespace.lower()
    ):
        rep.fail("metadata.namespace", f"invalid namespace {res.namespace!r}")
    check_labels(rep, "metadata.labels", res.labels)
    check_labels(rep, "metadata.annotations", res.annotations, values=False)


def validate_spec(spec: Any, *, name: str, namespace: str, path: str, rep: Reporter) -> None:
    """Validate one typed spec; ``path`` is where it sits in the document (``spec``)."""
    match spec:
        case VirtualService():
            validate_virtual_service(spec, namespace, path, rep)
        case DestinationRule():
            validate_destination_rule(spec, namespace, path, rep)
        case Gateway():
            validate_gateway(spec, name, path, rep)
        case ServiceEntry():
            validate_service_entry(spec, namespace, path, rep)
        case Sidecar():
            validate_sidecar(spec, path, rep)
        case WorkloadEntry():
            validate_workload_entry(spec, path, rep)
        case PeerAuthentication():
            validate_peer_authentication(spec, path, rep)
        case AuthorizationPolicy():
            validate_authorization_policy(spec, path, rep)
        case RequestAuthentication():
            validate_request_authentication(spec, path, rep)
        case EnvoyFilter():
            validate_envoy_filter(spec, path, rep)
        case Telemetry():
            validate_telemetry(spec, path, rep)
        case ConfigMap():
            validate_config_map(spec, path, rep)
        case Service():
            validate_service(spec, path, rep)
        case Deployment():
            validate_deployment(spec, path, rep)
        case PodSpec():
            validate_pod_spec(spec, path, rep)
        case _:
            pass


def validate_resource(res: Resource[Any], rep: Reporter) -> None:
    validate_metadata(res, rep)
    path = "" if getattr(res.spec, "TOP_LEVEL", False) else "spec"
    validate_spec(res.spec, name=res.name, namespace=res.namespace, path=path, rep=rep)
    report_not_enforced(res, path, rep)
