"""AdmissionReview documents as the Kubernetes API server sends them to a pod-mutating
webhook: the pod a Deployment's ReplicaSet creates, after the API server's defaulting (no
name yet, ``generateName``, owner reference, the projected service-account token volume,
``imagePullPolicy``, ``terminationMessagePath``, tolerations, ...)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
BOOKINFO = ROOT / "pymesh/samples/bookinfo/manifests/bookinfo.yaml"


def bookinfo_deployments() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(BOOKINFO.read_text())
    return [d for d in docs if d and d.get("kind") == "Deployment"]


def _defaulted_container(container: dict[str, Any], token_volume: str) -> dict[str, Any]:
    out = dict(container)
    out.setdefault("imagePullPolicy", "IfNotPresent")
    out.setdefault("resources", {})
    out.setdefault("terminationMessagePath", "/dev/termination-log")
    out.setdefault("terminationMessagePolicy", "File")
    out["ports"] = [{**p, "protocol": p.get("protocol", "TCP")} for p in out.get("ports") or ()]
    out["volumeMounts"] = [
        *(out.get("volumeMounts") or ()),
        {
            "name": token_volume,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        },
    ]
    return out


def pod_from_deployment(deployment: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    """The pod the API server hands the webhook for one replica of ``deployment``."""
    name = deployment["metadata"]["name"]
    template = deployment["spec"]["template"]
    token = "kube-api-access-x7k2p"
    spec = dict(template["spec"])
    spec["containers"] = [_defaulted_container(c, token) for c in spec["containers"]]
    spec.update(
        {
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": spec.get("serviceAccountName", "default"),
            "serviceAccountName": spec.get("serviceAccountName", "default"),
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {
                    "effect": "NoExecute",
                    "key": f"node.kubernetes.io/{key}",
                    "operator": "Exists",
                    "tolerationSeconds": 300,
                }
                for key in ("not-ready", "unreachable")
            ],
            "volumes": [
                *(spec.get("volumes") or ()),
                {
                    "name": token,
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                    },
                },
            ],
        }
    )
    replicaset = f"{name}-5d8f7c9b6"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{replicaset}-",
            "namespace": namespace,
            "labels": {**template["metadata"]["labels"], "pod-template-hash": "5d8f7c9b6"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": replicaset,
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": {},
    }


def admission_review(pod: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": str(uuid.uuid4()),
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add`` and ``replace`` on objects (all the injector emits), the way the API
    server applies them; anything else fails the test."""
    import copy

    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = out
        for part in parts[:-1]:
            node = node[part]
        if op["op"] == "replace":
            assert parts[-1] in node, f"replace of a missing {op['path']}"
        node[parts[-1]] = op["value"]
    return out
