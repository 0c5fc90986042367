"""AuthorizationPolicy → Envoy's RBAC and ext_authz filters for one proxy, as istiod builds
them (``pilot/pkg/security/authz/builder``):

* one ``envoy.filters.http.rbac`` (HTTP chains) / ``envoy.filters.network.rbac`` (TCP chains,
  ``stat_prefix: tcp.``) per action, in the order AUDIT (Envoy's LOG), DENY, ALLOW; CUSTOM
  policies come first, as an RBAC filter in shadow mode that names the matching policy in
  dynamic metadata, followed by the ``ext_authz`` filter that only runs when it did;
* policy names ``ns[<namespace>]-policy[<name>]-rule[<index>]`` (CUSTOM:
  ``istio-ext-authz-<provider>-`` before it); a policy without rules is one policy that never
  matches (so an ALLOW ``spec: {}`` denies everything);
* ``istio.io/dry-run: "true"`` policies go to ``shadow_rules``: evaluated, counted and logged
  in dynamic metadata, never enforced.

Policies apply to a workload from the root namespace (mesh-wide) and its own namespace,
without selector or with a selector matching its labels; ``targetRef(s)`` policies are for
Gateway API gateways and waypoints, which pymesh does not run, so they select nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pilot.generate.authz_rules import MATCH_NEVER, rule_policy
from pilot.generate.common import duration, outbound_cluster, typed
from pilot.model.extension_providers import ExtAuthzProvider
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.config.model.common import Resource
from pymesh.config.model.security import Action, AuthorizationPolicy

__all__ = [
    "DRY_RUN_ANNOTATION",
    "EXT_AUTHZ_PREFIX",
    "HTTP_EXT_AUTHZ",
    "HTTP_RBAC",
    "NETWORK_RBAC",
    "authz_http_filters",
    "authz_network_filters",
    "is_dry_run",
    "policy_name",
]

HTTP_RBAC = "envoy.filters.http.rbac"
NETWORK_RBAC = "envoy.filters.network.rbac"
HTTP_EXT_AUTHZ = "envoy.filters.http.ext_authz"
NETWORK_EXT_AUTHZ = "envoy.filters.network.ext_authz"
DRY_RUN_ANNOTATION = "istio.io/dry-run"
EXT_AUTHZ_PREFIX = "istio-ext-authz"
_EXT_AUTHZ_STAT_PREFIX = "istio_ext_authz_"
_BAD_CUSTOM = "-deny-due-to-bad-CUSTOM-action"
_ENVOY_ACTION = {Action.ALLOW: "ALLOW", Action.DENY: "DENY", Action.AUDIT: "LOG"}

Json = dict[str, Any]
AP = Resource[AuthorizationPolicy]


def is_dry_run(ap: AP) -> bool:
    return ap.annotations.get(DRY_RUN_ANNOTATION, "").strip().lower() in ("true", "1", "t")


def policy_name(namespace: str, name: str, rule: int, provider: str = "") -> str:
    prefix = f"{EXT_AUTHZ_PREFIX}-{provider}-" if provider else ""
    return f"{prefix}ns[{namespace}]-policy[{name}]-rule[{rule}]"


@dataclass(slots=True)
class _Built:
    """The enforced and the dry-run policies of one action (or one CUSTOM provider)."""

    action: str
    rules: dict[str, Json] = field(default_factory=dict)
    shadow: dict[str, Json] = field(default_factory=dict)
    has_rules: bool = False
    has_shadow: bool = False


def _build(policies: Sequence[AP], action: Action, *, tcp: bool, provider: str = "") -> _Built:
    built = _Built("DENY" if action is Action.CUSTOM else _ENVOY_ACTION[action])
    for ap in policies:
        dry = is_dry_run(ap)
        target = built.shadow if dry else built.rules
        if dry:
            built.has_shadow = True
        else:
            built.has_rules = True
        rules = ap.spec.rules or ()
        for index, rule in enumerate(rules):
            generated = rule_policy(rule, ap.namespace, action, tcp=tcp)
            if generated is not None:
                target[policy_name(ap.namespace, ap.name, index, provider)] = generated
        if not rules:
            target[policy_name(ap.namespace, ap.name, 0, provider)] = MATCH_NEVER
    return built


def _rbac(rules: dict[str, Json], action: str) -> Json:
    body: Json = {"policies": rules}
    if action != "ALLOW":
        body["action"] = action
    return body


def _shadow_prefix(built: _Built) -> str:
    # istiod names the prefix after the shadow rules' action, and reads ALLOW when there are
    # none; LOG shadow rules get no prefix.
    if not built.has_shadow:
        return "istio_dry_run_allow_"
    return {"ALLOW": "istio_dry_run_allow_", "DENY": "istio_dry_run_deny_"}.get(built.action, "")


def _rbac_filter(built: _Built, *, tcp: bool) -> Json:
    body: Json = {}
    if built.has_rules:
        body["rules"] = _rbac(built.rules, built.action)
    if built.has_shadow:
        body["shadow_rules"] = _rbac(built.shadow, built.action)
    prefix = _shadow_prefix(built)
    if prefix:
        body["shadow_rules_stat_prefix"] = prefix
    if tcp:
        body["stat_prefix"] = "tcp."
        return {"name": NETWORK_RBAC, "typed_config": typed("network_rbac", body)}
    return {"name": HTTP_RBAC, "typed_config": typed("http_rbac", body)}


def _policies(ctx: PushContext, node: ProxyNode) -> dict[Action, list[AP]]:
    grouped: dict[Action, list[AP]] = {a: [] for a in Action}
    for ap in ctx.authorization_policies_for(node):
        grouped[ap.spec.action].append(ap)
    return grouped


# -- CUSTOM ---------------------------------------------------------------------------------
def _lookup_cluster(ctx: PushContext, provider: ExtAuthzProvider) -> tuple[str, str]:
    """(hostname, cluster) of a provider's ``service`` (``host`` or ``namespace/host``)."""
    ns, slash, host = provider.service.partition("/")
    if not slash:
        ns, host = "", provider.service
    service = ctx.registry.service_by_host(host)
    if service is None or (ns and service.namespace != ns):
        raise LookupError(f"service {provider.service!r} not found in the registry")
    return service.hostname, outbound_cluster(provider.port, service.hostname)


def _header_patterns(headers: Sequence[str]) -> Json:
    patterns = []
    for header in headers:
        if header.startswith("*"):
            patterns.append({"suffix": header[1:], "ignore_case": True})
        elif header.endswith("*"):
            patterns.append({"prefix": header[:-1], "ignore_case": True})
        else:
            patterns.append({"exact": header, "ignore_case": True})
    return {"patterns": patterns}


def _enabled_metadata(filter_name: str, provider: str) -> Json:
    return {
        "filter": filter_name,
        "path": [{"key": _EXT_AUTHZ_STAT_PREFIX + "shadow_effective_policy_id"}],
        "value": {"string_match": {"prefix": f"{EXT_AUTHZ_PREFIX}-{provider}"}},
    }


def _ext_authz(ctx: PushContext, name: str, p: ExtAuthzProvider, *, tcp: bool) -> Json | None:
    hostname, cluster = _lookup_cluster(ctx, p)
    timeout = duration(p.timeout if p.timeout is not None else 600)
    common: Json = {"transport_api_version": "V3"}
    if p.fail_open:
        common["failure_mode_allow"] = True
    grpc = {
        "envoy_grpc": {"cluster_name": cluster, "authority": hostname},
        "timeout": timeout,
    }
    if tcp:
        if not p.grpc:
            return None  # an HTTP authorizer cannot check a TCP connection
        body = {
            **common,
            "stat_prefix": "tcp.",
            "grpc_service": grpc,
            "filter_enabled_metadata": _enabled_metadata(NETWORK_RBAC, name),
        }
        return {"name": NETWORK_EXT_AUTHZ, "typed_config": typed("network_ext_authz", body)}
    body = {**common, "filter_enabled_metadata": _enabled_metadata(HTTP_RBAC, name)}
    if p.status_on_error is not None:
        body["status_on_error"] = {"code": p.status_on_error}
    if p.request_body is not None:
        body["with_request_body"] = {
            "max_request_bytes": p.request_body.max_request_bytes,
            "allow_partial_message": p.request_body.allow_partial_message,
            "pack_as_bytes": p.request_body.pack_as_bytes,
        }
    if p.grpc:
        body["grpc_service"] = grpc
    else:
        service: Json = {
            "server_uri": {"uri": f"http://{hostname}", "cluster": cluster, "timeout": timeout},
            "path_prefix": p.path_prefix,
        }
        if p.include_additional_headers:
            service["authorization_request"] = {
                "headers_to_add": [{"key": k, "value": v} for k, v in p.include_additional_headers]
            }
        response: Json = {}
        for key, headers in (
            ("allowed_upstream_headers", p.headers_to_upstream_on_allow),
            ("allowed_client_headers", p.headers_to_downstream_on_deny),
            ("allowed_client_headers_on_success", p.headers_to_downstream_on_allow),
        ):
            if headers:
                response[key] = _header_patterns(headers)
        if response:
            service["authorization_response"] = response
        body["http_service"] = service
        if p.include_request_headers:
            body["allowed_headers"] = _header_patterns(p.include_request_headers)
    return {"name": HTTP_EXT_AUTHZ, "typed_config": typed("http_ext_authz", body)}


def _custom_filters(ctx: PushContext, policies: Sequence[AP], *, tcp: bool) -> list[Json]:
    by_provider: dict[str, list[AP]] = {}
    for ap in policies:
        name = ap.spec.provider.name if ap.spec.provider is not None else ""
        by_provider.setdefault(name, []).append(ap)
    filters: list[Json] = []
    for name in sorted(by_provider):
        built = _build(by_provider[name], Action.CUSTOM, tcp=tcp, provider=name)
        found = ctx.mesh.extension_provider(name)
        try:
            if found is None or found.ext_authz is None:
                raise LookupError(f"no ext_authz extension provider named {name!r}")
            ext = _ext_authz(ctx, name, found.ext_authz, tcp=tcp)
        except LookupError:
            # istiod fails closed: what the policies would send to the authorizer is denied.
            bad = {k + _BAD_CUSTOM: v for k, v in {**built.rules, **built.shadow}.items()}
            filters.append(_rbac_filter(_Built("DENY", bad, has_rules=True), tcp=tcp))
            continue
        if ext is None:
            continue
        # Enforced CUSTOM policies are the RBAC filter's shadow rules: they only name the
        # matching policy in metadata, and ext_authz runs when that name has its prefix.
        body: Json = {
            "shadow_rules": _rbac(built.rules, "DENY"),
            "shadow_rules_stat_prefix": _EXT_AUTHZ_STAT_PREFIX,
        }
        if built.shadow:
            body["rules"] = _rbac(built.shadow, "DENY")
        if tcp:
            body["stat_prefix"] = "tcp."
            rbac = {"name": NETWORK_RBAC, "typed_config": typed("network_rbac", body)}
        else:
            rbac = {"name": HTTP_RBAC, "typed_config": typed("http_rbac", body)}
        filters.extend([rbac, ext])
    return filters


def _filters(ctx: PushContext, node: ProxyNode, *, tcp: bool) -> list[Json]:
    grouped = _policies(ctx, node)
    filters = _custom_filters(ctx, grouped[Action.CUSTOM], tcp=tcp)
    for action in (Action.AUDIT, Action.DENY, Action.ALLOW):
        if grouped[action]:
            filters.append(_rbac_filter(_build(grouped[action], action, tcp=tcp), tcp=tcp))
    return filters


def authz_http_filters(ctx: PushContext, node: ProxyNode) -> list[Json]:
    """The HTTP filters that enforce the node's policies (before fault / cors / router)."""
    return _filters(ctx, node, tcp=False)


def authz_network_filters(ctx: PushContext, node: ProxyNode) -> list[Json]:
    """The network filters that enforce the node's policies on TCP chains (before tcp_proxy)."""
    return _filters(ctx, node, tcp=True)
