"""Incremental pushes: an endpoint-only change affects EDS alone, and whenever
``affected_types`` says so, every other type really is byte-identical for that proxy; changes
that the cluster or listener generators read (a service's first endpoint, a new service
account, a proxy's own instances, config) need everything."""

from __future__ import annotations

from collections.abc import Mapping

from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE, generate
from pilot.generate.incremental import EDS_ONLY, affected_types
from pilot.model import ProxyNode
from tests.pilot.generate._mesh import Mesh, build_mesh

OTHER_TYPES = (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)


def _pod(ip: str, pod: str, labels: Mapping[str, str], sa: str, **kw: str) -> ProxyNode:
    return ProxyNode.build(ip, pod, "shop", labels=labels, service_account=sa, **kw)  # type: ignore[arg-type]


API_V1 = {"app": "api", "version": "v1"}


def _with(base: Mesh, **nodes: ProxyNode) -> Mesh:
    return Mesh(base.resources, {**base.nodes, **nodes}, base.mesh)


def _without(base: Mesh, name: str) -> Mesh:
    return Mesh(base.resources, {k: v for k, v in base.nodes.items() if k != name}, base.mesh)


def _bytes(mesh: Mesh, node: ProxyNode, type_url: str) -> list[bytes]:
    return [m.SerializeToString(deterministic=True) for m in generate(mesh.ctx, node, type_url)]


def _eds_only_and_sound(old: Mesh, new: Mesh, nodes: Mapping[str, ProxyNode]) -> set[str]:
    """The nodes for which only EDS changes; checks that for those the other types are
    byte-identical between the two contexts."""
    only = set()
    for name, node in nodes.items():
        if affected_types(old.ctx, new.ctx, node) == EDS_ONLY:
            only.add(name)
            for type_url in OTHER_TYPES:
                assert _bytes(old, node, type_url) == _bytes(new, node, type_url), (name, type_url)
    return only


def test_another_pod_of_a_deployment_changes_only_eds() -> None:
    for mode in (None, "process"):
        old = build_mesh("features.yaml", mode=mode)
        new = _with(old, extra=_pod("127.0.54.70", "api-v1-b", API_V1, "api"))
        assert old.ctx.version != new.ctx.version
        everyone = dict(old.nodes)
        assert _eds_only_and_sound(old, new, everyone) == set(everyone), mode
        # and back: the pod goes away
        assert _eds_only_and_sound(new, old, everyone) == set(everyone), mode


def test_mtls_pods_of_one_deployment_change_only_eds() -> None:
    old = build_mesh("features.yaml", mtls=True)
    labels = {**API_V1, "security.istio.io/tlsMode": "istio"}
    new = _with(old, extra=_pod("127.0.54.71", "api-v1-c", labels, "api"))
    assert _eds_only_and_sound(old, new, old.nodes) == set(old.nodes)


def test_a_new_service_account_changes_clusters() -> None:
    old = build_mesh("features.yaml", mtls=True)
    # no Deployment matches: the endpoint's account is the one the pod announces
    labels = {"app": "api", "version": "v9", "security.istio.io/tlsMode": "istio"}
    new = _with(old, extra=_pod("127.0.54.72", "api-v9-d", labels, "api-canary"))
    web = old.nodes["web-v1"]
    assert affected_types(old.ctx, new.ctx, web) is None
    assert _bytes(old, web, CLUSTER_TYPE) != _bytes(new, web, CLUSTER_TYPE)  # SANs


def test_a_service_getting_its_first_endpoint_changes_everything() -> None:
    new = build_mesh("features.yaml", mode="process")
    old = _without(new, "db-v1")
    assert affected_types(old.ctx, new.ctx, new.nodes["web-v1"]) is None


def test_a_proxy_whose_own_instances_change_gets_everything() -> None:
    old = build_mesh("features.yaml")
    api = old.nodes["api-v1"]
    # a second deployment's pod announcing the api pod's address as one of its own
    moved = _pod(api.ip, "api-v1-e", {"app": "web", "version": "v1"}, "web")
    new = _with(old, extra=moved)
    assert affected_types(old.ctx, new.ctx, api) is None
    assert affected_types(old.ctx, new.ctx, old.nodes["db-v1"]) == EDS_ONLY


def test_config_changes_need_everything() -> None:
    old = build_mesh("features.yaml")
    new = build_mesh("features.yaml", "egress.yaml")
    assert affected_types(old.ctx, new.ctx, old.nodes["web-v1"]) is None
    assert affected_types(old.ctx, old.ctx, old.nodes["web-v1"]) == frozenset()
