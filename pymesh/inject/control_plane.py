"""The parts of the installation beside pilot: the CA (a container of the ``istiod`` pod,
Istio's 15012) and mixer (its own Deployment, scraped by a Prometheus with Istio's
``prometheus.io/*`` annotations), for :mod:`pymesh.inject.manifests`."""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "ALS_ADDRESS",
    "CA_ADDRESS",
    "NAMESPACE",
    "NON_ROOT",
    "ZIPKIN_ADDRESS",
    "ca_container",
    "ca_volumes",
    "mixer_manifests",
]

CA_ADDRESS = "istiod.istio-system.svc:15012"
ZIPKIN_ADDRESS = "mixer.istio-system.svc:9411"
#: where sidecars stream their access logs (Istio's request metrics are made of them)
ALS_ADDRESS = "mixer.istio-system.svc:9091"
NAMESPACE = "istio-system"
#: The control plane's containers: Istio's uid, nothing else.
NON_ROOT = {
    "runAsUser": 1337,
    "runAsGroup": 1337,
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def ca_volumes() -> list[dict[str, Any]]:
    """The CA's key material: an emptyDir (a new self-signed root per pod start) unless
    Istio's ``cacerts`` Secret plugs a root in, as with Istio's plug-in CA."""
    return [
        {"name": "ca-data", "emptyDir": {}},
        {"name": "cacerts", "secret": {"secretName": "cacerts", "optional": True}},
    ]


def ca_container(image: str) -> dict[str, Any]:
    return {
        "name": "ca",
        "image": image,
        "args": ["ca"],
        "env": [
            {"name": "CA_DIR", "value": "/var/lib/pymesh/ca"},
            {"name": "CACERTS_DIR", "value": "/etc/cacerts"},
            {"name": "CA_ADDRESS", "value": "0.0.0.0:15012"},
        ],
        "ports": [{"containerPort": 15012, "name": "grpc-ca", "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": 15012}, "periodSeconds": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": copy.deepcopy(NON_ROOT),
        "volumeMounts": [
            {"name": "ca-data", "mountPath": "/var/lib/pymesh/ca"},
            {"name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": True},
        ],
    }


def mixer_manifests(image: str) -> list[dict[str, Any]]:
    labels = {"app": "mixer", "istio": "mixer"}
    ports = (
        ("grpc-als", 9091),
        ("http-monitoring", 15014),
        ("http-zipkin", 9411),
        ("http-dashboard", 20001),
    )
    container = {
        "name": "mixer",
        "image": image,
        "args": ["mixer"],
        "env": [{"name": "MESH_CONFIG", "value": "/etc/istio/config/mesh"}],
        "ports": [{"containerPort": p, "name": n, "protocol": "TCP"} for n, p in ports],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 15014}, "periodSeconds": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": copy.deepcopy(NON_ROOT),
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/istio/config"}],
    }
    scrape = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "15014",
        "prometheus.io/path": "/metrics",
        "sidecar.istio.io/inject": "false",
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "mixer", "namespace": NAMESPACE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mixer", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": scrape},
                    "spec": {
                        "serviceAccountName": "mixer",
                        "containers": [container],
                        "volumes": [{"name": "config-volume", "configMap": {"name": "istio"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "mixer", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports],
            },
        },
    ]
