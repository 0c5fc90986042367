"""``networking.istio.io`` ServiceEntry and WorkloadEntry: services and endpoints that the
platform registry does not know about (external APIs, VMs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import EMPTY_MAP, FrozenMap, labels_match, spec_field

__all__ = [
    "Location",
    "Resolution",
    "ServiceEntry",
    "ServicePort",
    "WorkloadEntry",
    "WorkloadSelector",
]


@dataclass(frozen=True, slots=True)
class WorkloadSelector:
    """``networking.v1alpha3.WorkloadSelector``: workloads (pods, WorkloadEntries) by labels."""

    labels: FrozenMap[str, str] = EMPTY_MAP

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels_match(self.labels, labels)


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    """A non-Kubernetes workload: an address (IP, DNS name or ``unix://``) with labels.

    ``ports`` maps a service port name to the port the workload listens on.
    """

    KIND: ClassVar[str] = "WorkloadEntry"

    address: str = ""
    ports: FrozenMap[str, int] = spec_field(EMPTY_MAP, unsigned=True)  # noqa: RUF009
    labels: FrozenMap[str, str] = EMPTY_MAP
    network: str = ""
    locality: str = ""
    weight: int = spec_field(0, unsigned=True)
    service_account: str = ""


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int = spec_field(required=True, unsigned=True)
    name: str = spec_field(required=True)
    protocol: str = ""
    target_port: int = spec_field(0, unsigned=True)


class Location(StrEnum):
    MESH_EXTERNAL = "MESH_EXTERNAL"
    MESH_INTERNAL = "MESH_INTERNAL"


class Resolution(StrEnum):
    NONE = "NONE"
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"
    DYNAMIC_DNS = "DYNAMIC_DNS"


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """Adds ``hosts`` to the service registry, with ports and how to find endpoints."""

    KIND: ClassVar[str] = "ServiceEntry"

    hosts: tuple[str, ...] = spec_field(required=True, non_empty=True)
    addresses: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    location: Location = Location.MESH_EXTERNAL
    resolution: Resolution = Resolution.NONE
    endpoints: tuple[WorkloadEntry, ...] = ()
    workload_selector: WorkloadSelector | None = None
    export_to: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
