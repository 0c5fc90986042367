"""``networking.istio.io`` Sidecar: narrows what a sidecar listens on and can reach."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import spec_field
from pymesh.config.model.networking.destination_rule import ConnectionPoolSettings
from pymesh.config.model.networking.gateway import ServerTLSSettings
from pymesh.config.model.networking.service_entry import WorkloadSelector
from pymesh.config.model.networking.virtual_service import Destination

__all__ = [
    "CaptureMode",
    "IstioEgressListener",
    "IstioIngressListener",
    "OutboundTrafficPolicy",
    "OutboundTrafficPolicyMode",
    "Sidecar",
    "SidecarPort",
]


class CaptureMode(StrEnum):
    DEFAULT = "DEFAULT"
    IPTABLES = "IPTABLES"
    NONE = "NONE"


@dataclass(frozen=True, slots=True)
class SidecarPort:
    number: int = spec_field(0, unsigned=True)
    protocol: str = ""
    name: str = ""
    target_port: int = spec_field(0, unsigned=True, deprecated="it has no effect on Sidecars")


@dataclass(frozen=True, slots=True)
class IstioIngressListener:
    """An inbound listener on ``port`` forwarding to ``default_endpoint``."""

    port: SidecarPort = spec_field(required=True)  # noqa: RUF009
    bind: str = ""
    capture_mode: CaptureMode = CaptureMode.DEFAULT
    default_endpoint: str = ""
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


@dataclass(frozen=True, slots=True)
class IstioEgressListener:
    """An outbound listener; ``hosts`` are ``namespace/dnsName`` (``*/*``, ``./*``...)."""

    hosts: tuple[str, ...] = spec_field(required=True)
    port: SidecarPort | None = None
    bind: str = ""
    capture_mode: CaptureMode = CaptureMode.DEFAULT


class OutboundTrafficPolicyMode(StrEnum):
    REGISTRY_ONLY = "REGISTRY_ONLY"
    ALLOW_ANY = "ALLOW_ANY"


@dataclass(frozen=True, slots=True)
class OutboundTrafficPolicy:
    mode: OutboundTrafficPolicyMode = OutboundTrafficPolicyMode.REGISTRY_ONLY
    egress_proxy: Destination | None = None


@dataclass(frozen=True, slots=True)
class Sidecar:
    KIND: ClassVar[str] = "Sidecar"

    workload_selector: WorkloadSelector | None = None
    ingress: tuple[IstioIngressListener, ...] = ()
    egress: tuple[IstioEgressListener, ...] = ()
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
