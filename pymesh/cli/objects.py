"""What ``pymesh get`` shows for each kind: the running demo's pods as Kubernetes Pod objects,
and kubectl's table columns (plus ``-o wide``'s) for pods, services, deployments,
namespaces and Istio's kinds.

Pods exist only while a demo runs them, so they come from its state; every other kind is the
configuration pilot holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymesh.demo.state import PodState

__all__ = ["PROXY_IMAGE", "age", "columns", "pod_object", "pod_ready", "pod_status"]

PROXY_IMAGE = "pymesh/proxy"
Row = Callable[[dict[str, Any]], Sequence[str]]


def age(started: float, now: float | None = None) -> str:
    """kubectl's short ages: ``45s``, ``3m12s``, ``25m``, ``5h10m``, ``14h``, ``3d4h``, ``9d``."""
    if started <= 0:
        return "<unknown>"
    s = max(0, int((time.time() if now is None else now) - started))
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if d < 2:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def _app_ready(pod: PodState) -> bool:
    if pod.role == "app" and pod.port is not None:
        return pod.app_ready
    return not pod.warning  # an idle client container is ready; an unknown image is not


def pod_ready(pod: PodState) -> tuple[int, int]:
    """(ready containers, containers): the app's and the sidecar's (``istio-proxy``)."""
    proxy = pod.proxy is not None and pod.proxy.running and pod.sync == "SYNCED"
    if pod.role == "gateway":
        return int(proxy), 1
    if not pod.sidecar:
        return int(_app_ready(pod)), 1
    return int(_app_ready(pod)) + int(proxy), 2


def pod_status(pod: PodState) -> str:
    if pod.warning and pod.role != "gateway" and pod.port is None:
        return "NoStandIn"
    processes = [p for p in (pod.app, pod.proxy) if p is not None]
    if any(not p.running and p.exit_code not in (None, 0) for p in processes):
        return "Error"
    if pod.sidecar and (pod.proxy is None or not pod.proxy.running):
        return "Pending"
    return "Running"


def _started(pod: PodState) -> float:
    return min((p.started_at for p in (pod.app, pod.proxy) if p and p.started_at), default=0.0)


def pod_object(pod: PodState) -> dict[str, Any]:
    """The pod as ``kubectl get pod -o json`` shows one."""
    app_container: dict[str, Any] = {"name": pod.container or pod.name, "image": pod.image}
    if pod.port is not None:
        app_container["ports"] = [{"containerPort": pod.port, "protocol": "TCP"}]
    containers = [{"name": "istio-proxy", "image": PROXY_IMAGE}] if pod.sidecar else []
    statuses = [{"name": "istio-proxy", "ready": pod_ready(pod)[0] > 0, "restartCount": 0}]
    if not pod.sidecar:
        statuses = []
    if pod.role != "gateway":
        containers.insert(0, app_container)
        statuses.insert(0, {"name": app_container["name"], "ready": _app_ready(pod)})
        statuses[0]["restartCount"] = 0
    metadata: dict[str, Any] = {"name": pod.name, "namespace": pod.namespace}
    if pod.labels:
        metadata["labels"] = dict(pod.labels)
    if pod.owner:
        kind, _, name = pod.owner.partition("/")
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind, "name": name}]
    status: dict[str, Any] = {
        "phase": "Running" if pod_status(pod) == "Running" else "Pending",
        "podIP": pod.ip,
        "hostIP": pod.ip,
        "containerStatuses": statuses,
    }
    if started := _started(pod):
        status["startTime"] = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if pod.warning:
        status["message"] = pod.warning
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": containers,
            "serviceAccountName": pod.service_account,
            "nodeName": "localhost",
        },
        "status": status,
    }


# -- table columns, per kind: (header, row) and the extra columns of -o wide ------------------
def _pod_row(pods: Mapping[str, PodState]) -> Row:
    def row(obj: dict[str, Any]) -> Sequence[str]:
        pod = pods[f"{obj['metadata']['name']}.{obj['metadata']['namespace']}"]
        ready, total = pod_ready(pod)
        return (f"{ready}/{total}", pod_status(pod), "0", age(_started(pod)))

    return row


def _pod_wide(pods: Mapping[str, PodState]) -> Row:
    def row(obj: dict[str, Any]) -> Sequence[str]:
        pod = pods[f"{obj['metadata']['name']}.{obj['metadata']['namespace']}"]
        return (pod.ip, "localhost", pod.sync)

    return row


def _service_row(obj: dict[str, Any]) -> Sequence[str]:
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or ())
    return (spec.get("type") or "ClusterIP", spec.get("clusterIP") or "<none>", ports or "<none>")


def _service_wide(obj: dict[str, Any]) -> Sequence[str]:
    selector = (obj.get("spec") or {}).get("selector") or {}
    return (",".join(f"{k}={v}" for k, v in selector.items()) or "<none>",)


def _deployment_row(pods: Iterable[PodState]) -> Row:
    def row(obj: dict[str, Any]) -> Sequence[str]:
        owner = f"Deployment/{obj['metadata']['name']}"
        ns = obj["metadata"].get("namespace") or "default"
        mine = [p for p in pods if p.owner == owner and p.namespace == ns]
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        ready = sum(1 for p in mine if pod_ready(p)[0] == pod_ready(p)[1])
        return (f"{ready}/{replicas}", str(len(mine)), str(ready))

    return row


def _deployment_wide(obj: dict[str, Any]) -> Sequence[str]:
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    containers = template.get("containers") or []
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return (
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        ",".join(f"{k}={v}" for k, v in selector.items()) or "<none>",
    )


def _spec(obj: dict[str, Any], key: str, default: Any = "") -> Any:
    return (obj.get("spec") or {}).get(key, default)


_ISTIO_ROWS: dict[str, tuple[tuple[str, ...], Row]] = {
    "VirtualService": (
        ("GATEWAYS", "HOSTS"),
        lambda o: (
            str(_spec(o, "gateways", []) or ["mesh"]).replace("'", '"'),
            str(_spec(o, "hosts", [])).replace("'", '"'),
        ),
    ),
    "DestinationRule": (("HOST",), lambda o: (str(_spec(o, "host")),)),
    "ServiceEntry": (
        ("HOSTS", "LOCATION", "RESOLUTION"),
        lambda o: (
            str(_spec(o, "hosts", [])).replace("'", '"'),
            str(_spec(o, "location")),
            str(_spec(o, "resolution")),
        ),
    ),
    "PeerAuthentication": (
        ("MODE",),
        lambda o: (str((_spec(o, "mtls", {}) or {}).get("mode", "")),),
    ),
    "AuthorizationPolicy": (("ACTION",), lambda o: (str(_spec(o, "action", "ALLOW")),)),
    "Namespace": (
        ("STATUS",),
        lambda o: ("Active",),
    ),
}


def columns(
    kind: str, pods: Sequence[PodState], wide: bool
) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], Sequence[str]]]:
    """The columns after NAME (and before AGE where kubectl has it) for ``kind``."""
    by_key = {p.key: p for p in pods}
    parts: list[tuple[tuple[str, ...], Row]] = []
    if kind == "Pod":
        parts.append((("READY", "STATUS", "RESTARTS", "AGE"), _pod_row(by_key)))
        if wide:
            parts.append((("IP", "NODE", "PROXY"), _pod_wide(by_key)))
    elif kind == "Service":
        parts.append((("TYPE", "CLUSTER-IP", "PORT(S)"), _service_row))
        if wide:
            parts.append((("SELECTOR",), _service_wide))
    elif kind == "Deployment":
        parts.append((("READY", "UP-TO-DATE", "AVAILABLE"), _deployment_row(pods)))
        if wide:
            parts.append((("CONTAINERS", "IMAGES", "SELECTOR"), _deployment_wide))
    elif kind in _ISTIO_ROWS:
        parts.append(_ISTIO_ROWS[kind])
    if wide and kind not in ("Pod",):
        parts.append((("SOURCE",), lambda o: (str(o.get("_source") or "-"),)))

    header = tuple(h for names, _ in parts for h in names)

    def row(obj: dict[str, Any]) -> Sequence[str]:
        return tuple(cell for _, fn in parts for cell in fn(obj))

    return header, row
