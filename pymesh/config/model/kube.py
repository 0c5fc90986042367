"""Kubernetes kinds that describe workloads (Service, ServiceAccount, Deployment, Pod, Namespace)
and the ConfigMaps some mesh services read their configuration from.

These are partial views. Kubernetes owns their schema, so fields pymesh does not use (volumes,
env, probes...) are skipped rather than rejected (``LENIENT``); the fields that are read are
type-checked like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pymesh.config.model.common import EMPTY_MAP, FrozenMap, labels_match, spec_field

__all__ = [
    "ConfigMap",
    "ConfigMapVolumeSource",
    "Container",
    "ContainerPort",
    "Deployment",
    "KubeLabelSelector",
    "KubeServicePort",
    "LabelSelectorRequirement",
    "Namespace",
    "Pod",
    "PodSpec",
    "PodTemplate",
    "PodTemplateMetadata",
    "Service",
    "ServiceAccount",
    "Volume",
]


@dataclass(frozen=True, slots=True)
class KubeServicePort:
    """A Service port. ``target_port`` is a number, a container port name, or None (= port)."""

    LENIENT: ClassVar[bool] = True

    port: int = spec_field(required=True)
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str = ""
    target_port: int | str | None = None
    node_port: int | None = None

    @property
    def resolved_target_port(self) -> int | str:
        return self.port if self.target_port is None else self.target_port


@dataclass(frozen=True, slots=True)
class Service:
    """A Kubernetes Service: ``<name>.<namespace>.svc.cluster.local`` over the selected pods."""

    KIND: ClassVar[str] = "Service"
    LENIENT: ClassVar[bool] = True

    ports: tuple[KubeServicePort, ...] = ()
    selector: FrozenMap[str, str] = EMPTY_MAP
    type: str = "ClusterIP"
    cluster_ip: str = spec_field("", json="clusterIP")
    external_name: str = ""

    def selects(self, labels: Mapping[str, str]) -> bool:
        # A Service without selector has manually managed endpoints; it selects no pod.
        return bool(self.selector) and labels_match(self.selector, labels)

    def port(self, number: int) -> KubeServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A workload identity: ``spiffe://<trust-domain>/ns/<namespace>/sa/<name>``."""

    KIND: ClassVar[str] = "ServiceAccount"
    LENIENT: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ConfigMap:
    """Named configuration files (``data``), such as the rate limit service's ``config.yaml``.
    Its fields sit at the top level of the object, beside ``metadata``, not under ``spec``."""

    KIND: ClassVar[str] = "ConfigMap"
    TOP_LEVEL: ClassVar[bool] = True

    data: FrozenMap[str, str] = EMPTY_MAP
    binary_data: FrozenMap[str, bytes] = EMPTY_MAP
    immutable: bool = False


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace; its labels (``istio-injection``) live in the resource envelope."""

    KIND: ClassVar[str] = "Namespace"
    LENIENT: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ContainerPort:
    LENIENT: ClassVar[bool] = True

    container_port: int = spec_field(required=True)
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Container:
    LENIENT: ClassVar[bool] = True

    name: str = spec_field(required=True)
    image: str = ""
    #: the image's arguments (the demo's stand-ins for sample images read them)
    args: tuple[str, ...] = ()
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigMapVolumeSource:
    LENIENT: ClassVar[bool] = True

    name: str = ""


@dataclass(frozen=True, slots=True)
class Volume:
    """A pod volume; only ConfigMap volumes are read (the demo's rate limit service reads the
    ConfigMap its pod mounts)."""

    LENIENT: ClassVar[bool] = True

    name: str = spec_field(required=True)
    config_map: ConfigMapVolumeSource | None = None


@dataclass(frozen=True, slots=True)
class PodSpec:
    """The parts of a pod spec the mesh needs: containers' ports, the service account and the
    ConfigMaps it mounts."""

    LENIENT: ClassVar[bool] = True

    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    service_account_name: str = ""
    host_network: bool = False
    volumes: tuple[Volume, ...] = ()

    @property
    def service_account(self) -> str:
        return self.service_account_name or "default"

    def container_port(self, name_or_number: int | str) -> int | None:
        """Resolve a Service ``targetPort`` against the containers' ports."""
        if isinstance(name_or_number, int):
            return name_or_number
        for container in self.containers:
            for port in container.ports:
                if port.name == name_or_number:
                    return port.container_port
        return None


@dataclass(frozen=True, slots=True)
class Pod(PodSpec):
    """A pod (its spec); labels and annotations are in the resource envelope."""

    KIND: ClassVar[str] = "Pod"


@dataclass(frozen=True, slots=True)
class LabelSelectorRequirement:
    LENIENT: ClassVar[bool] = True

    key: str = spec_field(required=True)
    operator: str = spec_field(required=True)
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KubeLabelSelector:
    LENIENT: ClassVar[bool] = True

    match_labels: FrozenMap[str, str] = EMPTY_MAP
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class PodTemplateMetadata:
    LENIENT: ClassVar[bool] = True

    labels: FrozenMap[str, str] = EMPTY_MAP
    annotations: FrozenMap[str, str] = EMPTY_MAP


@dataclass(frozen=True, slots=True)
class PodTemplate:
    LENIENT: ClassVar[bool] = True

    metadata: PodTemplateMetadata = PodTemplateMetadata()
    spec: PodSpec = PodSpec()


@dataclass(frozen=True, slots=True)
class Deployment:
    """A Deployment: ``replicas`` pods built from ``template``."""

    KIND: ClassVar[str] = "Deployment"
    LENIENT: ClassVar[bool] = True

    replicas: int = 1
    selector: KubeLabelSelector | None = None
    template: PodTemplate = PodTemplate()

    @property
    def pod_labels(self) -> FrozenMap[str, str]:
        return self.template.metadata.labels
