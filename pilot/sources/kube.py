"""Pilot's configuration from a Kubernetes API server.

The cluster is mirrored into pilot's config directory through the very store ``pymesh
apply`` and ``pymesh delete`` use (pilot's ``apply`` / ``delete``: the store's plan, check,
atomic commit and reload): a watch event becomes the same validated file change, and the
directory source turns it into a snapshot as for any other change. So everything after the
event is the tested directory path; only :func:`watch`, the ``kubernetes_asyncio``
transport, needs a real API server.

Watched: Services, EndpointSlices, Pods, Namespaces and every Istio kind pilot reads.
Objects pilot does not model (EndpointSlices, Namespaces) are skipped by the store and
reported once per kind; endpoints come from the sidecars that connect, as in process mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import yaml

from pilot.sources.store import Action, Change
from pymesh.config.kinds import KINDS
from pymesh.errors import ConfigError
from pymesh.inject.manifests import plural

__all__ = ["WATCHED", "ConfigStore", "KubeMirror", "WatchEvent", "WatchedKind", "watch"]

log = structlog.get_logger(__name__)


def _version(versions: frozenset[str]) -> str:
    return "v1" if "v1" in versions else sorted(versions)[0]


@dataclass(frozen=True, slots=True)
class WatchedKind:
    group: str  # "" for the core API
    version: str
    plural: str
    kind: str


WATCHED: tuple[WatchedKind, ...] = (
    WatchedKind("", "v1", "services", "Service"),
    WatchedKind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    WatchedKind("", "v1", "pods", "Pod"),
    WatchedKind("", "v1", "namespaces", "Namespace"),
    *(
        WatchedKind(group, _version(info.versions), plural(kind), kind)
        for (group, kind), info in sorted(KINDS.items())
        if group.endswith("istio.io")
    ),
)

# Server-side bookkeeping that would make every resync look like a change.
_VOLATILE = ("resourceVersion", "uid", "generation", "managedFields", "creationTimestamp")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a Kubernetes watch: ``ADDED``, ``MODIFIED`` or ``DELETED``."""

    type: str
    object: Mapping[str, Any]


def _clean(obj: Mapping[str, Any], kind: WatchedKind) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE}
    api_version = f"{kind.group}/{kind.version}" if kind.group else kind.version
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    return {"apiVersion": api_version, "kind": kind.kind, **out, "metadata": meta}


class ConfigStore(Protocol):
    """What ``pymesh apply`` and ``pymesh delete`` call on pilot (:class:`pilot.server.Pilot`
    is one): validate, write the files atomically, reload."""

    async def apply(self, body: str, source: str = ...) -> list[Change]: ...

    async def delete(self, *, body: str | None = ..., source: str = ...) -> list[Change]: ...


class KubeMirror:
    """Turns watch events into the store's apply and delete."""

    def __init__(self, store: ConfigStore) -> None:
        self._store = store
        self._skipped: set[str] = set()

    async def handle(self, kind: WatchedKind, event: WatchEvent) -> list[Change]:
        """The changes ``event`` made. An object the store refuses (invalid Istio config
        written straight to the cluster) is logged with the reason and changes nothing, as
        pilot's loader does for a bad file; the cluster's next event may fix it."""
        obj = _clean(event.object, kind)
        source = f"kubernetes:{kind.kind}"
        body = yaml.safe_dump(obj, sort_keys=False)
        try:
            if event.type == "DELETED":
                changes = await self._store.delete(body=body, source=source)
            elif event.type in ("ADDED", "MODIFIED"):
                changes = await self._store.apply(body, source)
            else:
                log.warning("unknown watch event", type=event.type, kind=kind.kind)
                return []
        except ConfigError as exc:
            log.warning("cluster object refused", kind=kind.kind, error=str(exc))
            return []
        for change in changes:
            if change.action is Action.SKIPPED and kind.kind not in self._skipped:
                self._skipped.add(kind.kind)
                log.info("kind not modelled", kind=kind.kind, reason=change.message)
        return changes


Handler = Callable[[WatchedKind, WatchEvent], Awaitable[object]]


async def watch(kind: WatchedKind, handle: Handler, *, kubeconfig: str | None = None) -> None:
    """Follow ``kind`` cluster-wide for ever (list, then watch from its resourceVersion,
    relisting after the server ends a watch). Not covered by the test suite: it needs an API
    server."""
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio import watch as kwatch

    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        while True:
            stream = kwatch.Watch()
            if kind.group.endswith("istio.io"):
                lister: Any = custom.list_cluster_custom_object
                args: tuple[str, ...] = (kind.group, kind.version, kind.plural)
            else:
                lister = _core_lister(client, api, kind)
                args = ()
            try:
                async for event in stream.stream(lister, *args, timeout_seconds=300):
                    await handle(kind, WatchEvent(event["type"], event["raw_object"]))
            except client.ApiException as exc:
                log.warning("watch failed", kind=kind.kind, status=exc.status, reason=exc.reason)
                await asyncio.sleep(2.0)


def _core_lister(client: Any, api: Any, kind: WatchedKind) -> Any:
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    return {
        "Service": core.list_service_for_all_namespaces,
        "Pod": core.list_pod_for_all_namespaces,
        "Namespace": core.list_namespace,
        "EndpointSlice": discovery.list_endpoint_slice_for_all_namespaces,
    }[kind.kind]
