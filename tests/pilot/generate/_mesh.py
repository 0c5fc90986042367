"""A small in-memory mesh for generator tests: config files in, PushContext and nodes out.

Every Deployment in the config gets a connected sidecar (auto-registration), with the pod
template's labels and service account, on an address of this test area (127.0.31.N).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from pilot.generate import generate
from pilot.model import MeshConfig, ProxyNode, PushContext, TlsCredential, credentials_from_text
from pilot.registry import Registry
from pymesh.config.loader import load_path
from pymesh.config.model import kube
from pymesh.config.model.common import Resource
from pymesh.config.snapshot import ConfigSnapshot

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO.parent / "shared" / "istio-samples"
DATA = Path(__file__).resolve().parent / "data"
BOOKINFO = "bookinfo/platform/kube/bookinfo.yaml"
GATEWAY_LABELS = {"istio": "ingressgateway"}


def sample(path: str) -> Path:
    """A file of ``../shared/istio-samples``; skips the test when the samples are absent."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    return SAMPLES / path


def load(*paths: Path | str) -> tuple[Resource[Any], ...]:
    """Resources of the files, in order; a later definition of a resource replaces an earlier
    one (as when the files are applied one after the other)."""
    resources: list[Resource[Any]] = []
    for p in paths:
        path = Path(p)
        if not path.is_absolute() and not path.exists():
            path = sample(str(p)) if not (DATA / path).exists() else DATA / path
        resources.extend(load_path(path).resources)
    return ConfigSnapshot(tuple(resources)).resources


def credentials(*paths: Path | str) -> tuple[TlsCredential, ...]:
    found: list[TlsCredential] = []
    for p in paths:
        path = DATA / p if not Path(p).is_absolute() else Path(p)
        found.extend(credentials_from_text(path.read_text(), str(path)))
    return tuple(found)


def workload_nodes(
    resources: Iterable[Resource[Any]],
    *,
    mode: str | None = None,
    subnet: str = "127.0.31",
    mtls: bool = False,
) -> dict[str, ProxyNode]:
    """A sidecar per Deployment, keyed by the Deployment name (``name.namespace`` for the
    second of two same-named Deployments). ``mtls``: the pods carry the injector's
    ``security.istio.io/tlsMode: istio`` label (their sidecars speak mesh mTLS)."""
    nodes = {}
    deployments = [r for r in resources if isinstance(r.spec, kube.Deployment)]
    for index, r in enumerate(sorted(deployments, key=lambda r: (r.namespace, r.name)), 2):
        spec: kube.Deployment = r.spec
        labels = dict(spec.pod_labels)
        if mtls:
            labels["security.istio.io/tlsMode"] = "istio"
        key = r.name if r.name not in nodes else f"{r.name}.{r.namespace}"
        nodes[key] = ProxyNode.build(
            f"{subnet}.{index}",
            f"{r.name}-0",
            r.namespace,
            labels=labels,
            service_account=spec.template.spec.service_account,
            mode=mode,
        )
    return nodes


def gateway_node(
    ip: str = "127.0.31.200", namespace: str = "istio-system", mode: str | None = None
) -> ProxyNode:
    return ProxyNode.build(
        ip,
        "istio-ingressgateway-0",
        namespace,
        type="router",
        labels=GATEWAY_LABELS,
        service_account="istio-ingressgateway",
        mode=mode,
    )


@dataclass
class Mesh:
    resources: tuple[Resource[Any], ...]
    nodes: dict[str, ProxyNode]
    mesh: MeshConfig = field(default_factory=MeshConfig)
    creds: tuple[TlsCredential, ...] = ()

    def __post_init__(self) -> None:
        self.registry = Registry.build(self.resources, self.nodes.values())
        self.ctx = PushContext.build(
            self.resources, self.registry, self.mesh, credentials=self.creds
        )

    def generate(self, node: str | ProxyNode, type_url: str) -> list[Any]:
        proxy = self.nodes[node] if isinstance(node, str) else node
        return generate(self.ctx, proxy, type_url)

    def dicts(self, node: str | ProxyNode, type_url: str) -> list[dict[str, Any]]:
        return [as_dict(m) for m in self.generate(node, type_url)]

    def by_name(self, node: str | ProxyNode, type_url: str) -> dict[str, dict[str, Any]]:
        return {d.get("name") or d["cluster_name"]: d for d in self.dicts(node, type_url)}


def build_mesh(
    *paths: Path | str,
    mode: str | None = None,
    mesh: MeshConfig | None = None,
    gateway: bool = True,
    creds: tuple[TlsCredential, ...] = (),
    extra: Mapping[str, ProxyNode] | None = None,
    mtls: bool = False,
    resources: Iterable[Resource[Any]] = (),
) -> Mesh:
    """``resources`` are added after the files' (objects loaded elsewhere, e.g. into another
    namespace)."""
    loaded = ConfigSnapshot((*load(*paths), *resources)).resources
    nodes = workload_nodes(loaded, mode=mode, mtls=mtls)
    if gateway:
        nodes["gateway"] = gateway_node(mode=mode)
    nodes.update(extra or {})
    return Mesh(loaded, nodes, mesh or MeshConfig(), creds)


def as_dict(message: Any) -> dict[str, Any]:
    """Plain JSON data (no OrderedDicts), as ``istioctl proxy-config -o json`` shows it."""
    data: dict[str, Any] = json.loads(
        json_format.MessageToJson(message, preserving_proto_field_name=True)
    )
    return data
