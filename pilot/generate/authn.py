"""RequestAuthentication → ``envoy.filters.http.jwt_authn``, as istiod builds it
(``pilot/pkg/security/authn/policy_applier.go``):

* the JWT rules of every RequestAuthentication that applies to the proxy (root namespace and
  its own, selector matching its labels), sorted by issuer, become providers ``origins-<i>``;
* each provider keeps its verified payload in dynamic metadata under ``payload``, where the
  RBAC filter reads ``request.auth.*`` (see ``authz_rules.py``); ``permission`` and ``scope``
  claims are split on spaces there;
* the requirement lets a request without a token through and refuses one with an invalid
  token: ``provider OR allow_missing`` for one provider; for several, ``any of (each provider,
  all of (each provider OR allow_missing))``, so a token must be valid for the provider whose
  location it is in;
* ``jwksUri`` is fetched by the proxy through the cluster of its host (a registry service or
  ServiceEntry, Envoy's ``remote_jwks``, cached 5 minutes); a host pilot does not know gets
  Istio's cluster name for it all the same (``outbound|<port>||<host>``), which the proxy
  refuses to fetch from until a ServiceEntry makes it exist (``pymesh analyze`` says so).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pilot.generate.common import duration, outbound_cluster, typed
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.config.model.common import Resource
from pymesh.config.model.security import JWTRule, RequestAuthentication

__all__ = ["JWT_AUTHN", "jwks_cluster", "jwt_authn_filter", "request_authentications_for"]

JWT_AUTHN = "envoy.filters.http.jwt_authn"
_SPACE_DELIMITED = ["permission", "scope"]

Json = dict[str, Any]


def request_authentications_for(
    ctx: PushContext, node: ProxyNode
) -> tuple[Resource[RequestAuthentication], ...]:
    found = []
    for ra in ctx.config.of_kind(RequestAuthentication):
        if ra.namespace not in (node.namespace, ctx.mesh.root_namespace):
            continue
        if ra.spec.target_ref is not None or ra.spec.target_refs:
            continue  # Gateway API gateways and waypoints only
        selector = ra.spec.selector
        if selector is None or selector.matches(node.labels):
            found.append(ra)
    return tuple(found)


def jwks_cluster(ctx: PushContext, uri: str) -> tuple[str, bool]:
    """(cluster, known): the cluster the proxy fetches ``uri`` through, and whether the
    registry has its host."""
    url = urlsplit(uri)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    service = ctx.registry.service_by_host(host)
    if service is not None and service.port(port) is not None:
        return outbound_cluster(port, service.hostname), True
    return outbound_cluster(port, host), False


def _provider(ctx: PushContext, rule: JWTRule, *, gateway: bool) -> Json:
    provider: Json = {
        "issuer": rule.issuer,
        "payload_in_metadata": "payload",
        "normalize_payload_in_metadata": {"space_delimited_claims": _SPACE_DELIMITED},
    }
    if rule.audiences:
        provider["audiences"] = list(rule.audiences)
    if rule.forward_original_token:
        provider["forward"] = True
    if rule.output_payload_to_header:
        provider["forward_payload_header"] = rule.output_payload_to_header
    if gateway:
        # A gateway may route on claims, so its route is chosen again after verification.
        provider["clear_route_cache"] = True
    if rule.output_claim_to_headers:
        provider["claim_to_headers"] = [
            {"header_name": c.header, "claim_name": c.claim} for c in rule.output_claim_to_headers
        ]
    if rule.from_headers:
        provider["from_headers"] = [
            {"name": h.name, "value_prefix": h.prefix} if h.prefix else {"name": h.name}
            for h in rule.from_headers
        ]
    if rule.from_params:
        provider["from_params"] = list(rule.from_params)
    if rule.from_cookies:
        provider["from_cookies"] = list(rule.from_cookies)
    timeout = rule.timeout if rule.timeout is not None else 5.0
    if rule.jwks_uri and not rule.jwks:
        cluster, _ = jwks_cluster(ctx, rule.jwks_uri)
        provider["remote_jwks"] = {
            "http_uri": {"uri": rule.jwks_uri, "cluster": cluster, "timeout": duration(timeout)},
            "cache_duration": "300s",
        }
    else:
        provider["local_jwks"] = {"inline_string": rule.jwks}
    return provider


def _requirement(names: list[str]) -> Json:
    def optional(name: str) -> Json:
        return {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}

    if len(names) == 1:
        return optional(names[0])
    return {
        "requires_any": {
            "requirements": [
                *({"provider_name": n} for n in names),
                {"requires_all": {"requirements": [optional(n) for n in names]}},
            ]
        }
    }


def jwt_authn_filter(ctx: PushContext, node: ProxyNode) -> Json | None:
    rules = sorted(
        (rule for ra in request_authentications_for(ctx, node) for rule in ra.spec.jwt_rules),
        key=lambda r: r.issuer,
    )
    if not rules:
        return None
    providers = {
        f"origins-{i}": _provider(ctx, rule, gateway=node.is_router) for i, rule in enumerate(rules)
    }
    config = {
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": _requirement(list(providers))}],
        "bypass_cors_preflight": True,
    }
    return {"name": JWT_AUTHN, "typed_config": typed("jwt_authn", config)}
