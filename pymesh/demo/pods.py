"""Pods as the demo runs them, derived from the Deployments and Pods pilot holds.

The demo plays kubelet: whatever Deployments and Pods are in pilot's configuration (seeded from
the manifests, then changed with ``pymesh apply`` / ``pymesh delete``) are the pods that should
run. :func:`desired_pods` reads them as the admin API returns them (Kubernetes JSON).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pymesh.demo.images import Role, StandIn, stand_in
from pymesh.demo.layout import OUTBOUND_PORT
from pymesh.inject.prometheus import prometheus_merge

__all__ = [
    "APP_PORT_OFFSET",
    "INJECT_LABEL",
    "MAX_REPLICAS",
    "NAMESPACE_INJECTION_LABEL",
    "PodSpec",
    "desired_pods",
    "pod_env",
]

NAMESPACE_INJECTION_LABEL = "istio-injection"
INJECT_LABEL = "sidecar.istio.io/inject"

#: process mode: an app behind a sidecar listens this far from its container port, which its
#: sidecar holds (as iptables gives a pod's inbound traffic to its sidecar)
APP_PORT_OFFSET = 20000

#: replicas above this are capped: every pod takes a loopback address and two processes
MAX_REPLICAS = 5
# A proxy inherited from the caller's shell would take the pod's traffic past its sidecar.
_DROPPED = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


_NO_APP = StandIn(Role.CLIENT)


@dataclass(frozen=True, slots=True)
class PodSpec:
    """One pod to run. ``revision`` changes whenever the template does (the pod restarts)."""

    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    image: str = ""
    container: str = ""
    container_port: int | None = None
    #: the container's ``args`` (the image's arguments)
    args: tuple[str, ...] = ()
    stand_in: StandIn = _NO_APP
    owner: str = ""
    revision: str = ""
    #: the ConfigMaps the pod mounts, by name (the rate limit service reads its config there)
    config_maps: tuple[str, ...] = ()
    #: whether the pod gets a sidecar (Istio's injection: see :func:`desired_pods`)
    sidecar: bool = True

    #: the pod template's annotations, as the manifest wrote them
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def scrape(self) -> tuple[dict[str, str], str | None]:
        """The annotations after Istio's injection (``prometheus.io/*`` on the agent's
        merged ``:15020/stats/prometheus``) and the app's own, for the agent (JSON or None)."""
        return prometheus_merge(self.annotations)

    @property
    def key(self) -> str:
        return f"{self.name}.{self.namespace}"

    @property
    def role(self) -> Role:
        return self.stand_in.role

    @property
    def app_name(self) -> str:
        return self.labels.get("app") or self.name

    @property
    def version(self) -> str:
        return self.labels.get("version", "")

    @property
    def runs_app(self) -> bool:
        return self.role is Role.APP and self.container_port is not None

    def app_ports(self, captured: bool) -> dict[int, int]:
        """Process mode: container port -> the port the app listens on, so that whatever
        dials the pod's address meets its sidecar's inbound listener (and its
        PeerAuthentication), never the app. Only HTTP apps: a TCP app's clients reach it
        directly in process mode."""
        port = self.container_port
        if captured or not self.sidecar or not self.runs_app or self.stand_in.tcp or port is None:
            return {}
        hidden = port + APP_PORT_OFFSET
        return {port: hidden if hidden < 65536 else port - APP_PORT_OFFSET}


INJECT_TEMPLATES = "inject.istio.io/templates"
GRPC_AGENT_WARNING = (
    "inject.istio.io/templates: grpc-agent asks for proxyless gRPC (the app reads xDS itself); "
    "the demo runs a sidecar in front of the app instead"
)


def _revision(kind: str, spec: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, "spec": spec}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _pod_from(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    pod_spec: Mapping[str, Any],
    owner: str,
    revision: str,
    injected: bool = True,
    annotations: Mapping[str, Any] | None = None,
) -> PodSpec:
    containers = [c for c in pod_spec.get("containers") or () if isinstance(c, Mapping)]
    main = containers[0] if containers else {}
    image = str(main.get("image", ""))
    ports = [p for p in main.get("ports") or () if isinstance(p, Mapping)]
    port = ports[0].get("containerPort") if ports else None
    app = stand_in(image, labels)
    templates = str((annotations or {}).get(INJECT_TEMPLATES, "")).split(",")
    if "grpc-agent" in (t.strip() for t in templates):
        app = replace(app, warning=GRPC_AGENT_WARNING)
    # A gateway is a proxy itself; any other pod follows its namespace and its own label.
    sidecar = app.role is Role.GATEWAY or (
        injected and labels.get(INJECT_LABEL, "true").lower() != "false"
    )
    return PodSpec(
        name=name,
        namespace=namespace,
        labels=dict(labels),
        service_account=str(pod_spec.get("serviceAccountName") or "default"),
        image=image,
        container=str(main.get("name", "")),
        container_port=int(port) if isinstance(port, int) else None,
        args=tuple(str(a) for a in main.get("args") or () if isinstance(a, (str, int, float))),
        stand_in=app,
        owner=owner,
        # A pod whose injection changed is created again (kubectl rollout restart's effect).
        revision=revision if sidecar else f"{revision}-no-sidecar",
        annotations={str(k): str(v) for k, v in (annotations or {}).items()},
        config_maps=tuple(
            str(v["configMap"]["name"])
            for v in pod_spec.get("volumes") or ()
            if isinstance(v, Mapping)
            and isinstance(v.get("configMap"), Mapping)
            and v["configMap"].get("name")
        ),
        sidecar=sidecar,
    )


def _not_injected(items: Iterable[Mapping[str, Any]]) -> set[str]:
    """Namespaces labelled ``istio-injection=disabled``."""
    found = set()
    for item in items:
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        disabled = labels.get(NAMESPACE_INJECTION_LABEL) == "disabled"
        if item.get("kind") == "Namespace" and meta.get("name") and disabled:
            found.add(str(meta["name"]))
    return found


def desired_pods(items: Iterable[Mapping[str, Any]]) -> list[PodSpec]:
    """The pods for the ``Deployment`` and ``Pod`` objects in ``items`` (admin API JSON),
    sorted by namespace and name so that addresses are handed out in a stable order.

    Every pod gets a sidecar, as if each manifest went through ``istioctl kube-inject``,
    except in a namespace labelled ``istio-injection=disabled`` and for a pod labelled
    ``sidecar.istio.io/inject: "false"`` (Istio's ``legacy`` namespace of its tasks)."""
    items = list(items)
    disabled = _not_injected(items)
    pods: list[PodSpec] = []
    for item in items:
        kind = item.get("kind")
        meta = item.get("metadata") or {}
        spec = item.get("spec") or {}
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace") or "default")
        if not name:
            continue
        if kind == "Deployment":
            template = spec.get("template") or {}
            template_meta = template.get("metadata") or {}
            labels = template_meta.get("labels") or {}
            replicas = spec.get("replicas", 1)
            count = min(int(replicas) if isinstance(replicas, int) else 1, MAX_REPLICAS)
            revision = _revision(kind, spec)
            for i in range(count):
                pod_name = name if count == 1 else f"{name}-{i + 1}"
                pods.append(
                    _pod_from(
                        pod_name,
                        namespace,
                        labels,
                        template.get("spec") or {},
                        f"Deployment/{name}",
                        revision,
                        namespace not in disabled,
                        template_meta.get("annotations"),
                    )
                )
        elif kind == "Pod":
            labels = meta.get("labels") or {}
            pods.append(
                _pod_from(
                    name,
                    namespace,
                    labels,
                    spec,
                    "",
                    _revision(kind, spec),
                    namespace not in disabled,
                    meta.get("annotations"),
                )
            )
    pods.sort(key=lambda p: (p.namespace, p.name))
    return pods


def pod_env(
    name: str,
    namespace: str,
    service_account: str,
    ip: str,
    base: Mapping[str, str],
    *,
    captured: bool = False,
    service_proxy: str | None = None,
) -> dict[str, str]:
    """The environment of every process in a pod: what Kubernetes' downward API and Istio's
    injection would give it, plus (process mode) ``HTTP_PROXY`` to the pod's sidecar (in both
    cases: curl reads only the lower-case one). A ``captured`` pod (netns mode) needs none:
    iptables takes its traffic to the sidecar. A pod without a sidecar gets the node's
    ``service_proxy`` (``host:port``, kube-proxy's role) instead."""
    env = {k: v for k, v in base.items() if k.lower() not in _DROPPED}
    env.update(
        {
            "POD_NAME": name,
            "POD_NAMESPACE": namespace,
            "INSTANCE_IP": ip,
            "SERVICE_ACCOUNT": service_account,
        }
    )
    if not captured:
        proxy = f"http://{service_proxy or f'{ip}:{OUTBOUND_PORT}'}"
        env.update(
            {
                "HTTP_PROXY": proxy,
                "http_proxy": proxy,
                "NO_PROXY": "localhost",
                "no_proxy": "localhost",
            }
        )
    return env
