"""The kinds pymesh reads, the API versions accepted for each, and the kinds it knowingly skips."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pymesh.config.model import kube
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

__all__ = [
    "KINDS",
    "KindInfo",
    "Skip",
    "kind_alias",
    "kind_info",
    "plural",
    "resource_name",
    "skip_reason",
    "split_api_version",
]

_NETWORKING_VERSIONS = frozenset({"v1", "v1beta1", "v1alpha3"})
_SECURITY_VERSIONS = frozenset({"v1", "v1beta1"})
_TELEMETRY_VERSIONS = frozenset({"v1", "v1alpha1"})


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    kind: str
    versions: frozenset[str]
    spec_type: type[Any]
    namespaced: bool = True

    @property
    def top_level(self) -> bool:
        """Whether the fields sit beside ``metadata`` (ConfigMap), not under ``spec``."""
        return bool(getattr(self.spec_type, "TOP_LEVEL", False))


@dataclass(frozen=True, slots=True)
class Skip:
    """A kind that is recognised but not loaded; ``warn`` when skipping changes behaviour."""

    reason: str
    warn: bool


def _info(group: str, spec_type: type[Any], versions: frozenset[str], **kw: Any) -> KindInfo:
    return KindInfo(group, spec_type.KIND, versions, spec_type, **kw)


KINDS: MappingProxyType[tuple[str, str], KindInfo] = MappingProxyType(
    {
        (i.group, i.kind): i
        for i in (
            _info("networking.istio.io", VirtualService, _NETWORKING_VERSIONS),
            _info("networking.istio.io", DestinationRule, _NETWORKING_VERSIONS),
            _info("networking.istio.io", Gateway, _NETWORKING_VERSIONS),
            _info("networking.istio.io", ServiceEntry, _NETWORKING_VERSIONS),
            _info("networking.istio.io", Sidecar, _NETWORKING_VERSIONS),
            _info("networking.istio.io", WorkloadEntry, _NETWORKING_VERSIONS),
            # Istio serves EnvoyFilter only as v1alpha3.
            _info("networking.istio.io", EnvoyFilter, frozenset({"v1alpha3"})),
            _info("security.istio.io", PeerAuthentication, _SECURITY_VERSIONS),
            _info("security.istio.io", RequestAuthentication, _SECURITY_VERSIONS),
            _info("security.istio.io", AuthorizationPolicy, _SECURITY_VERSIONS),
            _info("telemetry.istio.io", Telemetry, _TELEMETRY_VERSIONS),
            _info("", kube.Service, frozenset({"v1"})),
            _info("", kube.ServiceAccount, frozenset({"v1"})),
            _info("", kube.Pod, frozenset({"v1"})),
            _info("", kube.Namespace, frozenset({"v1"}), namespaced=False),
            _info("", kube.ConfigMap, frozenset({"v1"})),
            _info("apps", kube.Deployment, frozenset({"v1", "v1beta1", "v1beta2"})),
        )
    }
)

_NOT_MESH_CONFIG = "not mesh configuration"
_UNSUPPORTED = "not supported by pymesh; skipped"

_SKIPPED: MappingProxyType[tuple[str, str], Skip] = MappingProxyType(
    {
        **{
            (group, kind): Skip(_NOT_MESH_CONFIG, warn=False)
            for group, kinds in {
                "": (
                    "Secret Endpoints PersistentVolumeClaim PersistentVolume "
                    "ResourceQuota LimitRange ReplicationController Event"
                ),
                "apps": "StatefulSet DaemonSet ReplicaSet",
                "batch": "Job CronJob",
                "networking.k8s.io": "Ingress IngressClass NetworkPolicy",
                "discovery.k8s.io": "EndpointSlice",
                "rbac.authorization.k8s.io": "Role RoleBinding ClusterRole ClusterRoleBinding",
                "policy": "PodDisruptionBudget",
                "autoscaling": "HorizontalPodAutoscaler",
                "admissionregistration.k8s.io": (
                    "MutatingWebhookConfiguration ValidatingWebhookConfiguration"
                ),
                "apiextensions.k8s.io": "CustomResourceDefinition",
                "install.istio.io": "IstioOperator",
            }.items()
            for kind in kinds.split()
        },
        **{
            (group, kind): Skip(_UNSUPPORTED, warn=True)
            for group, kinds in {
                "networking.istio.io": "WorkloadGroup ProxyConfig",
                "extensions.istio.io": "WasmPlugin",
                "gateway.networking.k8s.io": (
                    "Gateway GatewayClass HTTPRoute GRPCRoute TCPRoute TLSRoute UDPRoute "
                    "ReferenceGrant BackendTLSPolicy"
                ),
            }.items()
            for kind in kinds.split()
        },
    }
)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``networking.istio.io/v1`` -> ``("networking.istio.io", "v1")``; ``v1`` -> ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def kind_info(api_version: str, kind: str) -> KindInfo | None:
    return KINDS.get((split_api_version(api_version)[0], kind))


def skip_reason(api_version: str, kind: str) -> Skip | None:
    return _SKIPPED.get((split_api_version(api_version)[0], kind))


# kubectl's and istioctl's short names.
_SHORT_NAMES = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "gw": "Gateway",
    "se": "ServiceEntry",
    "we": "WorkloadEntry",
    "pa": "PeerAuthentication",
    "ra": "RequestAuthentication",
    "ap": "AuthorizationPolicy",
    "svc": "Service",
    "sa": "ServiceAccount",
    "ns": "Namespace",
    "cm": "ConfigMap",
    "po": "Pod",
    "deploy": "Deployment",
}


def plural(kind: str) -> str:
    """``virtualservices``, ``authorizationpolicies``, ``gateways`` (lower case)."""
    kind = kind.lower()
    consonant_y = kind.endswith("y") and kind[-2:-1] not in ("a", "e", "i", "o", "u")
    return kind[:-1] + "ies" if consonant_y else kind + "s"


def kind_alias(text: str) -> str | None:
    """``virtualservices``, ``VirtualService``, ``vs``, ``virtualservice.networking.istio.io``
    -> ``VirtualService``; None when no kind matches."""
    wanted = text.strip().lower().split(".", 1)[0]
    if wanted in _SHORT_NAMES:
        return _SHORT_NAMES[wanted]
    for info in KINDS.values():
        if wanted in (info.kind.lower(), plural(info.kind)):
            return info.kind
    return None


def resource_name(kind: str, *, singular: bool = False) -> str:
    """kubectl's name of a kind's resource: ``virtualservices.networking.istio.io``,
    ``services``, ``deployments.apps`` (``singular``: ``virtualservice.networking.istio.io``)."""
    group = next((i.group for i in KINDS.values() if i.kind == kind), "")
    name = kind.lower() if singular else plural(kind)
    return f"{name}.{group}" if group else name
