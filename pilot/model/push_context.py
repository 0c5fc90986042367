"""The state of the mesh for one push: configuration indexed the way the generators ask for
it, plus the registry and mesh settings. Immutable; every config or registry change builds a
new one, and ``version`` (a content hash) tells whether anything changed at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from pilot.envoyfilter import CompiledFilter, CompiledPatch, compile_envoy_filters, patches_for
from pilot.model.credentials import TlsCredential
from pilot.model.mesh import MeshConfig
from pilot.model.proxy import ProxyNode
from pilot.model.visibility import SidecarScope, exported_to, sidecar_scope
from pilot.registry.registry import Registry, Service, as_resources
from pymesh.config.hosts import (
    MESH_GATEWAY,
    more_specific,
    most_specific_match,
    resolve_gateway_name,
    to_fqdn,
)
from pymesh.config.model.common import FrozenMap, Resource
from pymesh.config.model.networking import (
    ApplyTo,
    DestinationRule,
    EnvoyFilter,
    Gateway,
    Sidecar,
    VirtualService,
)
from pymesh.config.model.security import AuthorizationPolicy, MTLSMode, PeerAuthentication
from pymesh.config.snapshot import ConfigSnapshot

__all__ = ["PushContext"]

VS = Resource[VirtualService]
DR = Resource[DestinationRule]


def _gateway_keys(vs: VS) -> tuple[str, ...]:
    gateways = vs.spec.gateways or (MESH_GATEWAY,)
    return tuple(resolve_gateway_name(g, vs.namespace) for g in gateways)


class PushContext:
    """Indexed configuration for one push. Build with :meth:`build`."""

    __slots__ = (
        "_vs_by_gateway",
        "_vs_hosts",
        "authorization_policies",
        "config",
        "config_version",
        "credentials",
        "destination_rules",
        "domain",
        "envoy_filters",
        "gateways",
        "mesh",
        "peer_authentications",
        "protos",
        "registry",
        "sidecars",
        "version",
        "virtual_services",
    )

    def __init__(
        self,
        config: ConfigSnapshot,
        registry: Registry,
        mesh: MeshConfig,
        credentials: Iterable[TlsCredential] = (),
        domain: str = "cluster.local",
    ) -> None:
        self.config = config
        self.registry = registry
        self.mesh = mesh
        self.domain = domain
        #: the messages parsed for this push, by type and resource dict (as JSON): proxies
        #: whose resources come out the same share one parse, as istiod's per-push xDS cache
        self.protos: dict[str, Any] = {}
        self.virtual_services: tuple[VS, ...] = config.of_kind(VirtualService)
        self.destination_rules: tuple[DR, ...] = config.of_kind(DestinationRule)
        self.gateways: tuple[Resource[Gateway], ...] = config.of_kind(Gateway)
        self.sidecars: tuple[Resource[Sidecar], ...] = config.of_kind(Sidecar)
        self.peer_authentications: tuple[Resource[PeerAuthentication], ...] = config.of_kind(
            PeerAuthentication
        )
        self.authorization_policies: tuple[Resource[AuthorizationPolicy], ...] = config.of_kind(
            AuthorizationPolicy
        )
        # Compiled once per configuration: patch values parsed into Envoy protos.
        self.envoy_filters: tuple[CompiledFilter, ...] = compile_envoy_filters(
            config.of_kind(EnvoyFilter)
        )
        self.credentials: FrozenMap[tuple[str, str], TlsCredential] = FrozenMap(
            ((c.namespace, c.name), c) for c in credentials
        )
        by_gateway: dict[str, list[VS]] = {}
        for vs in self.virtual_services:
            for key in _gateway_keys(vs):
                by_gateway.setdefault(key, []).append(vs)
        self._vs_by_gateway = FrozenMap((k, tuple(v)) for k, v in by_gateway.items())
        self._vs_hosts = FrozenMap(
            (vs.key, tuple(to_fqdn(h, vs.namespace, domain) for h in vs.spec.hosts))
            for vs in self.virtual_services
        )
        digest = hashlib.sha256()
        for part in (config.version, repr(mesh), domain):
            digest.update(part.encode())
        for cred_key in sorted(self.credentials):
            digest.update(repr(self.credentials[cred_key]).encode())
        #: everything but the registry: equal between two contexts whose difference is the
        #: registry alone (what incremental pushes look at)
        self.config_version: str = digest.hexdigest()[:16]
        whole = hashlib.sha256(self.config_version.encode())
        whole.update(registry.version.encode())
        self.version: str = whole.hexdigest()[:16]

    @classmethod
    def build(
        cls,
        config: Any,
        registry: Registry,
        mesh: MeshConfig | None = None,
        *,
        credentials: Iterable[TlsCredential] = (),
        domain: str = "cluster.local",
    ) -> PushContext:
        """Index ``config`` (a ConfigSnapshot, a LoadResult or resources) for a push."""
        snapshot = (
            config if isinstance(config, ConfigSnapshot) else ConfigSnapshot(as_resources(config))
        )
        return cls(snapshot, registry, mesh or MeshConfig(), credentials, domain)

    def envoy_filter_patches(self, node: ProxyNode) -> dict[ApplyTo, tuple[CompiledPatch, ...]]:
        """The EnvoyFilter patches for ``node``, by ``applyTo``, in the order they apply."""
        if not self.envoy_filters:
            return {}
        return patches_for(
            self.envoy_filters, node.namespace, node.labels, node.metadata, self.mesh.root_namespace
        )

    # -- scope --------------------------------------------------------------------------------
    def sidecar_scope(self, node: ProxyNode) -> SidecarScope:
        return sidecar_scope(
            self.sidecars, node, self.mesh.root_namespace, self.mesh.outbound_traffic_policy
        )

    def services_for(self, node: ProxyNode) -> tuple[Service, ...]:
        """Services this proxy can reach: exported to its namespace and in its egress scope."""
        scope = self.sidecar_scope(node)
        return tuple(
            s
            for s in self.registry.services
            if exported_to(s.export_to, s.namespace, node.namespace)
            and scope.allows(s.namespace, s.hostname)
        )

    # -- virtual services ---------------------------------------------------------------------
    def vs_hosts(self, vs: VS) -> tuple[str, ...]:
        """The VirtualService's hosts, short names resolved in its namespace."""
        return self._vs_hosts.get(vs.key, ())

    def virtual_services_for(self, node: ProxyNode, gateway: str = MESH_GATEWAY) -> tuple[VS, ...]:
        """VirtualServices bound to ``gateway`` (``ns/name`` or ``mesh``) and visible to the
        node's namespace; the node's own namespace first, then in configuration order."""
        found = [
            vs
            for vs in self._vs_by_gateway.get(gateway, ())
            if exported_to(vs.spec.export_to, vs.namespace, node.namespace)
        ]
        if gateway == MESH_GATEWAY:
            scope = self.sidecar_scope(node)
            found = [
                vs for vs in found if any(scope.allows(vs.namespace, h) for h in self.vs_hosts(vs))
            ]
        return tuple(sorted(found, key=lambda vs: vs.namespace != node.namespace))

    def virtual_service_for_host(
        self, node: ProxyNode, hostname: str, gateway: str = MESH_GATEWAY
    ) -> VS | None:
        """The VirtualService that routes ``hostname`` for this node: an exact host first,
        then the most specific wildcard; the first such VirtualService wins."""
        candidates = self.virtual_services_for(node, gateway)
        best: tuple[str, VS] | None = None
        for vs in candidates:
            match = most_specific_match(hostname, self.vs_hosts(vs))
            if match == hostname:
                return vs
            if match is not None and (best is None or more_specific(match, best[0])):
                best = (match, vs)
        return best[1] if best else None

    # -- destination rules --------------------------------------------------------------------
    def destination_rule(self, node: ProxyNode, service: Service) -> DR | None:
        """Istio's lookup: the proxy's namespace, then the service's, then the root namespace;
        within one, the most specific host (exact before wildcard)."""
        hostname = service.hostname
        order = [node.namespace, service.namespace, self.mesh.root_namespace]
        for ns in dict.fromkeys(order):
            best: tuple[str, DR] | None = None
            for dr in self.destination_rules:
                if dr.namespace != ns:
                    continue
                if ns != node.namespace and not exported_to(
                    dr.spec.export_to, dr.namespace, node.namespace
                ):
                    continue
                selector = dr.spec.workload_selector
                if selector is not None and (
                    ns != node.namespace or not selector.matches(node.labels)
                ):
                    continue
                host = to_fqdn(dr.spec.host, dr.namespace, self.domain)
                if most_specific_match(hostname, [host]) is None:
                    continue
                if best is None or more_specific(host, best[0]):
                    best = (host, dr)
            if best is not None:
                return best[1]
        return None

    # -- gateways -----------------------------------------------------------------------------
    def gateways_for(self, node: ProxyNode) -> tuple[Resource[Gateway], ...]:
        """Gateways whose selector matches a router node's labels (in any namespace)."""
        if not node.is_router:
            return ()
        return tuple(g for g in self.gateways if g.spec.selects(node.labels))

    def credential(self, namespace: str, name: str) -> TlsCredential | None:
        """A Secret named by ``credentialName``: in ``namespace`` first, then anywhere."""
        found = self.credentials.get((namespace, name))
        if found is not None:
            return found
        return next((c for (_, n), c in self.credentials.items() if n == name), None)

    # -- security -----------------------------------------------------------------------------
    def mtls_mode(self, node: ProxyNode, port: int | None) -> MTLSMode:
        """The inbound mTLS mode of a proxy's port (None: the workload as a whole)."""
        return self.workload_mtls_mode(node.namespace, node.labels, port)

    def workload_mtls_mode(
        self, namespace: str, labels: Mapping[str, str], port: int | None
    ) -> MTLSMode:
        """Istio's PeerAuthentication precedence for a workload port: the mesh policy (root
        namespace, no selector), then the namespace's, then the workload's (selector), then
        its ``portLevelMtls`` entry; UNSET inherits from the level above; PERMISSIVE when no
        policy says anything. Where a level has several policies, the first one counts
        (Istio takes the oldest)."""
        mesh = namespace_wide = workload = None
        for pa in self.peer_authentications:
            selector = pa.spec.selector
            if selector is not None and selector.match_labels:
                if workload is None and pa.namespace == namespace and selector.matches(labels):
                    workload = pa.spec
            elif pa.namespace == self.mesh.root_namespace:
                mesh = mesh or pa.spec
            elif pa.namespace == namespace:
                namespace_wide = namespace_wide or pa.spec
        if namespace == self.mesh.root_namespace:
            namespace_wide = None  # the root namespace's policy is the mesh's
        mode = MTLSMode.PERMISSIVE
        for level in (mesh, namespace_wide, workload):
            if (
                level is not None
                and level.mtls is not None
                and level.mtls.mode is not MTLSMode.UNSET
            ):
                mode = level.mtls.mode
        if workload is not None and port is not None:
            override = workload.port_level_mtls.get(port)
            if override is not None and override.mode is not MTLSMode.UNSET:
                mode = override.mode
        return mode

    def authorization_policies_for(
        self, node: ProxyNode
    ) -> tuple[Resource[AuthorizationPolicy], ...]:
        """Policies that apply to the node: mesh-wide (root namespace) and its namespace's,
        without selector or with one matching its labels."""
        found = []
        for ap in self.authorization_policies:
            if ap.namespace not in (node.namespace, self.mesh.root_namespace):
                continue
            if ap.spec.target_ref is not None or ap.spec.target_refs:
                continue
            selector = ap.spec.selector
            if selector is None or selector.matches(node.labels):
                found.append(ap)
        return tuple(found)

    def __repr__(self) -> str:
        return f"PushContext(version={self.version!r}, resources={len(self.config)})"
