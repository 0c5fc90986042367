"""Checks for the Kubernetes kinds, on the fields pymesh reads (the API server does the rest)."""

from __future__ import annotations

import re

from pymesh.config import hosts
from pymesh.config.issues import Reporter
from pymesh.config.model.kube import Deployment, PodSpec, Service
from pymesh.config.validate._common import check_labels, check_port

__all__ = ["validate_deployment", "validate_pod_spec", "validate_service"]

_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
_IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _port_name(rep: Reporter, path: str, name: str) -> None:
    if len(name) > 15 or not _IANA_SVC_NAME.match(name) or "--" in name:
        rep.fail(path, f"invalid port name {name!r} (1-15 lower-case letters, digits and '-')")


def validate_service(svc: Service, path: str, rep: Reporter) -> None:
    names: set[str] = set()
    for i, port in enumerate(svc.ports):
        ppath = f"{path}.ports[{i}]"
        check_port(rep, f"{ppath}.port", port.port)
        if port.protocol not in _PROTOCOLS:
            rep.fail(
                f"{ppath}.protocol", f"protocol must be TCP, UDP or SCTP, not {port.protocol!r}"
            )
        if isinstance(port.target_port, int):
            check_port(rep, f"{ppath}.targetPort", port.target_port)
        elif isinstance(port.target_port, str):
            _port_name(rep, f"{ppath}.targetPort", port.target_port)
        if len(svc.ports) > 1 and not port.name:
            rep.fail(f"{ppath}.name", "ports must be named when a Service has several")
        if port.name:
            if not hosts.is_dns1123_label(port.name) or port.name != port.name.lower():
                rep.fail(f"{ppath}.name", f"invalid port name {port.name!r}")
            if port.name in names:
                rep.fail(f"{ppath}.name", f"duplicate port name {port.name!r}")
            names.add(port.name)
    check_labels(rep, f"{path}.selector", svc.selector)
    if svc.type == "ExternalName" and not svc.external_name:
        rep.fail(f"{path}.externalName", "required for type ExternalName")


def validate_pod_spec(spec: PodSpec, path: str, rep: Reporter) -> None:
    names: set[str] = set()
    for field, label in (("containers", "containers"), ("init_containers", "initContainers")):
        for i, container in enumerate(getattr(spec, field)):
            cpath = f"{path}.{label}[{i}]"
            if (
                not hosts.is_dns1123_label(container.name)
                or container.name != container.name.lower()
            ):
                rep.fail(f"{cpath}.name", f"invalid container name {container.name!r}")
            if container.name in names:
                rep.fail(f"{cpath}.name", f"duplicate container name {container.name!r}")
            names.add(container.name)
            for j, port in enumerate(container.ports):
                ppath = f"{cpath}.ports[{j}]"
                check_port(rep, f"{ppath}.containerPort", port.container_port)
                if port.name:
                    _port_name(rep, f"{ppath}.name", port.name)
                if port.protocol not in _PROTOCOLS:
                    rep.fail(f"{ppath}.protocol", "protocol must be TCP, UDP or SCTP")
    if not spec.containers:
        rep.fail(f"{path}.containers", "at least one container is required")


def validate_deployment(dep: Deployment, path: str, rep: Reporter) -> None:
    if dep.replicas < 0:
        rep.fail(f"{path}.replicas", "replicas must not be negative")
    labels = dep.template.metadata.labels
    check_labels(rep, f"{path}.template.metadata.labels", labels)
    if dep.selector is None:
        rep.fail(f"{path}.selector", "required field is missing")
    check_labels(rep, f"{path}.selector.matchLabels", dep.selector.match_labels)
    if not dep.selector.match_labels and not dep.selector.match_expressions:
        rep.fail(f"{path}.selector", "selector must not be empty")
    for key, value in dep.selector.match_labels.items():
        if labels.get(key) != value:
            rep.fail(
                f"{path}.selector.matchLabels[{key}]",
                "selector does not match the template labels",
            )
    validate_pod_spec(dep.template.spec, f"{path}.template.spec", rep)
