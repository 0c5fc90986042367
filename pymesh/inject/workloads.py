"""``kube-inject`` over Kubernetes documents, and the webhook's JSONPatch.

Workloads carry their pod under ``spec.template`` (Deployment, StatefulSet, DaemonSet,
ReplicaSet, Job; CronJob one level deeper); a Pod is its own template.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymesh.errors import ConfigError
from pymesh.inject.pod import InjectConfig, Injected, inject_pod

__all__ = ["InjectResult", "inject_documents", "json_patch"]

_TEMPLATED = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


@dataclass(frozen=True, slots=True)
class InjectResult:
    documents: list[Any]
    notes: list[str]


def _template(doc: Mapping[str, Any]) -> tuple[list[str], Mapping[str, Any]] | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return [], doc
    if kind in _TEMPLATED:
        return ["spec", "template"], spec.get("template") or {}
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return ["spec", "jobTemplate", "spec", "template"], job.get("template") or {}
    return None


def inject_documents(documents: Iterable[Any], cfg: InjectConfig) -> InjectResult:
    """Every workload in ``documents`` injected (``istioctl kube-inject -f``); other
    documents pass through unchanged. ``notes`` say which were skipped and why."""
    out: list[Any] = []
    notes: list[str] = []
    for index, doc in enumerate(documents):
        found = _template(doc) if isinstance(doc, Mapping) else None
        if found is None:
            out.append(doc)
            continue
        path, pod = found
        meta = doc.get("metadata") or {}
        where = f"{doc.get('kind')}/{meta.get('name', '?')} (document {index})"
        try:
            result: Injected = inject_pod(pod, cfg, workload=str(meta.get("name") or ""))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        notes += [f"{where}: {w}" for w in result.warnings]
        if result.skipped:
            notes.append(f"{where}: not injected: {result.skipped}")
        if not path:
            out.append(result.pod)
            continue
        copy = dict(doc)
        node = copy
        for key in path[:-1]:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        node[path[-1]] = result.pod
        out.append(copy)
    return InjectResult(out, notes)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """RFC 6902 operations turning the pod ``before`` into the injected ``after``: the
    annotations and labels key by key, the container lists and volumes whole."""
    ops: list[dict[str, Any]] = []
    for section in ("annotations", "labels"):
        old = (before.get("metadata") or {}).get(section)
        new = (after.get("metadata") or {}).get(section) or {}
        if old is None:
            ops.append({"op": "add", "path": f"/metadata/{section}", "value": new})
            continue
        for key, value in new.items():
            if old.get(key) != value:
                op = "replace" if key in old else "add"
                ops.append(
                    {"op": op, "path": f"/metadata/{section}/{_escape(key)}", "value": value}
                )
    for key in ("initContainers", "containers", "volumes"):
        old_list = (before.get("spec") or {}).get(key)
        new_list = (after.get("spec") or {}).get(key)
        if new_list == old_list:
            continue
        op = "replace" if old_list is not None else "add"
        ops.append({"op": op, "path": f"/spec/{key}", "value": new_list})
    return ops
