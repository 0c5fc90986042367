"""PeerAuthentication, RequestAuthentication and AuthorizationPolicy checks, after Istio's
webhook."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from pymesh.config import hosts
from pymesh.config.codec import camel_name
from pymesh.config.issues import Reporter
from pymesh.config.model.common import PolicyTargetReference
from pymesh.config.model.security import (
    Action,
    AuthorizationPolicy,
    Condition,
    JWTRule,
    Operation,
    PeerAuthentication,
    RequestAuthentication,
    Rule,
    Source,
)
from pymesh.config.validate._common import HEADER_NAME, check, check_selector_labels

__all__ = [
    "validate_authorization_policy",
    "validate_peer_authentication",
    "validate_request_authentication",
]

_TARGET_KINDS = frozenset(
    {
        ("", "Service"),
        ("core", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
    }
)
_PLAIN_KEYS = frozenset(
    {
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "connection.sni",
    }
)
_PATH_LITERAL = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=*]*")
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
_MAP_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
# Attributes a CUSTOM (external authorizer) policy cannot match on.
_CUSTOM_FORBIDDEN_KEYS = (
    "source.namespace",
    "source.serviceAccount",
    "source.trustDomain",
    "source.principal",
    "request.auth.",
)


def validate_peer_authentication(pa: PeerAuthentication, path: str, rep: Reporter) -> None:
    labels = pa.selector.match_labels if pa.selector is not None else {}
    if pa.selector is not None:
        check_selector_labels(rep, f"{path}.selector.matchLabels", labels)
        if not labels:
            rep.warn(f"{path}.selector", "selector without labels applies to all workloads")
    if pa.port_level_mtls and not labels:
        rep.fail(f"{path}.portLevelMtls", "portLevelMtls needs a selector with labels")
    for port in pa.port_level_mtls:
        if not 1 <= port <= 65535:
            rep.fail(f"{path}.portLevelMtls[{port}]", f"port {port} is not in range 1..65535")


def validate_request_authentication(ra: RequestAuthentication, path: str, rep: Reporter) -> None:
    if ra.selector is not None:
        check_selector_labels(rep, f"{path}.selector.matchLabels", ra.selector.match_labels)
    if ra.target_ref is not None:
        _target_ref(ra.target_ref, f"{path}.targetRef", rep)
    for i, ref in enumerate(ra.target_refs or ()):
        _target_ref(ref, f"{path}.targetRefs[{i}]", rep)
    issuers: dict[str, int] = {}
    for i, rule in enumerate(ra.jwt_rules):
        rpath = f"{path}.jwtRules[{i}]"
        _jwt_rule(rule, rpath, rep)
        if rule.issuer in issuers:
            rep.fail(
                f"{rpath}.issuer",
                f"issuer {rule.issuer!r} is already in jwtRules[{issuers[rule.issuer]}]",
            )
        issuers[rule.issuer] = i


def _jwt_rule(rule: JWTRule, path: str, rep: Reporter) -> None:
    if not rule.issuer:
        rep.fail(f"{path}.issuer", "issuer must not be empty")
    for i, audience in enumerate(rule.audiences):
        if not audience:
            rep.fail(f"{path}.audiences[{i}]", "empty audience")
    if rule.jwks_uri:
        url = urlsplit(rule.jwks_uri)
        if url.scheme not in ("http", "https") or not url.hostname:
            rep.fail(f"{path}.jwksUri", f"{rule.jwks_uri!r} is not an http(s) URL")
    if rule.jwks:
        try:
            keys = json.loads(rule.jwks).get("keys")
        except (ValueError, AttributeError):
            keys = None
        if not isinstance(keys, list) or not keys:
            rep.fail(f"{path}.jwks", "jwks must be a JSON Web Key Set with a non-empty keys list")
    for i, header in enumerate(rule.from_headers):
        if not HEADER_NAME.match(header.name):
            rep.fail(f"{path}.fromHeaders[{i}].name", f"invalid header name {header.name!r}")
    for field, values in (("fromParams", rule.from_params), ("fromCookies", rule.from_cookies)):
        for i, value in enumerate(values):
            if not value:
                rep.fail(f"{path}.{field}[{i}]", "must not be empty")
    if rule.output_payload_to_header and not HEADER_NAME.match(rule.output_payload_to_header):
        rep.fail(f"{path}.outputPayloadToHeader", "invalid header name")
    for i, claim in enumerate(rule.output_claim_to_headers):
        cpath = f"{path}.outputClaimToHeaders[{i}]"
        if not HEADER_NAME.match(claim.header):
            rep.fail(f"{cpath}.header", f"invalid header name {claim.header!r}")
        if not claim.claim:
            rep.fail(f"{cpath}.claim", "claim must not be empty")


def validate_authorization_policy(ap: AuthorizationPolicy, path: str, rep: Reporter) -> None:
    if ap.selector is not None:
        check_selector_labels(rep, f"{path}.selector.matchLabels", ap.selector.match_labels)
        if not ap.selector.match_labels:
            rep.warn(f"{path}.selector", "selector without labels applies to all workloads")
    if ap.target_ref is not None:
        _target_ref(ap.target_ref, f"{path}.targetRef", rep)
    for i, ref in enumerate(ap.target_refs or ()):
        _target_ref(ref, f"{path}.targetRefs[{i}]", rep)
    if ap.action is Action.CUSTOM:
        if ap.rules is None:
            rep.fail(f"{path}.rules", "CUSTOM without rules never triggers; use rules: [{}]")
        if ap.provider is None or not ap.provider.name:
            rep.fail(f"{path}.provider.name", "CUSTOM action needs a provider name")
    elif ap.provider is not None:
        rep.fail(f"{path}.provider", f"provider is only for CUSTOM action, not {ap.action}")
    if ap.action is Action.DENY and ap.rules is None:
        rep.fail(f"{path}.rules", "DENY without rules never triggers; use rules: [{}]")
    for i, rule in enumerate(ap.rules or ()):
        _rule(rule, ap.action, f"{path}.rules[{i}]", rep)


def _target_ref(ref: PolicyTargetReference, path: str, rep: Reporter) -> None:
    if ref.namespace:
        rep.fail(f"{path}.namespace", "cross-namespace targetRef is not supported")
    if (ref.group, ref.kind) not in _TARGET_KINDS:
        rep.fail(path, f"targetRef cannot point at {ref.group or 'core'}/{ref.kind}")


def _values(rep: Reporter, path: str, values: tuple[str, ...]) -> None:
    for i, value in enumerate(values):
        if not value:
            rep.fail(f"{path}[{i}]", "empty value not allowed")


def _rule(rule: Rule, action: Action, path: str, rep: Reporter) -> None:
    if rule.from_ is not None and not rule.from_:
        rep.fail(f"{path}.from", "from must not be empty (omit it to match any source)")
    for i, rule_from in enumerate(rule.from_ or ()):
        if rule_from.source is None:
            rep.fail(f"{path}.from[{i}].source", "source is required")
        _source(rule_from.source, action, f"{path}.from[{i}].source", rep)
    if rule.to is not None and not rule.to:
        rep.fail(f"{path}.to", "to must not be empty (omit it to match any request)")
    for i, rule_to in enumerate(rule.to or ()):
        if rule_to.operation is None:
            rep.fail(f"{path}.to[{i}].operation", "operation is required")
        _operation(rule_to.operation, f"{path}.to[{i}].operation", rep)
    for i, cond in enumerate(rule.when):
        _condition(cond, action, f"{path}.when[{i}]", rep)
    if action is Action.DENY and _http_only(rule):
        rep.warn(
            path,
            "this DENY rule uses only HTTP attributes, so it denies all TCP traffic in scope; "
            "name the ports explicitly",
        )


def _http_only(rule: Rule) -> bool:
    tcp_from = any(
        s.source is not None
        and (
            s.source.principals
            or s.source.not_principals
            or s.source.ip_blocks
            or s.source.not_ip_blocks
            or s.source.namespaces
            or s.source.not_namespaces
            or s.source.remote_ip_blocks
            or s.source.not_remote_ip_blocks
            or s.source.service_accounts
            or s.source.not_service_accounts
        )
        for s in rule.from_ or ()
    )
    tcp_to = any(
        t.operation is not None and (t.operation.ports or t.operation.not_ports)
        for t in rule.to or ()
    )
    has_from, has_to = bool(rule.from_), bool(rule.to)
    return (has_from and not has_to and not tcp_from) or (has_to and not tcp_to)


def _source(src: Source, action: Action, path: str, rep: Reporter) -> None:
    if src == Source():
        rep.fail(path, "source must set at least one field")
    if (src.service_accounts or src.not_service_accounts) and (
        src.principals or src.not_principals or src.namespaces or src.not_namespaces
    ):
        rep.fail(path, "serviceAccounts cannot be combined with namespaces or principals")
    for name in Source.__dataclass_fields__:
        values: tuple[str, ...] = getattr(src, name)
        json = camel_name(name)
        _values(rep, f"{path}.{json}", values)
        if "ip_blocks" in name:
            for i, ip in enumerate(values):
                check(rep, f"{path}.{json}[{i}]", hosts.check_ip_or_cidr, ip)
        if "service_accounts" in name:
            for i, sa in enumerate(values):
                _service_account(rep, f"{path}.{json}[{i}]", sa)
        if "trust_domains" in name:
            for i, td in enumerate(values):
                if "*" not in td:
                    check(rep, f"{path}.{json}[{i}]", hosts.check_fqdn, td)
        if action is Action.CUSTOM and values and "ip_blocks" not in name:
            rep.fail(f"{path}.{json}", f"{json} is not supported with CUSTOM action")


def _service_account(rep: Reporter, path: str, value: str) -> None:
    if "*" in value:
        rep.fail(path, "wildcards are not allowed in serviceAccounts")
    ns, slash, sa = value.partition("/")
    if value.count("/") > 1 or (slash and (not ns or not sa)):
        rep.fail(path, f"expected 'serviceAccount' or 'namespace/serviceAccount', got {value!r}")


def _operation(op: Operation, path: str, rep: Reporter) -> None:
    if op == Operation():
        rep.fail(path, "operation must set at least one field")
    for name in Operation.__dataclass_fields__:
        _values(rep, f"{path}.{camel_name(name)}", getattr(op, name))
    for name, ports in (("ports", op.ports), ("notPorts", op.not_ports)):
        for i, port in enumerate(ports):
            if not port.isdigit() or int(port) > 65535:
                rep.fail(f"{path}.{name}[{i}]", f"bad port {port!r}")
    for name, paths in (("paths", op.paths), ("notPaths", op.not_paths)):
        for i, p in enumerate(paths):
            _path_template(rep, f"{path}.{name}[{i}]", p)


def _path_template(rep: Reporter, path: str, value: str) -> None:
    if "{" not in value and "}" not in value:
        return
    seen_any = False
    for glob in value.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if seen_any:
                rep.fail(path, f"invalid path template {value!r}: {{**}} must be last")
            seen_any = glob == "{**}"
        elif "{" in glob or "}" in glob:
            rep.fail(path, f"invalid path template {value!r}: only {{*}} and {{**}} are allowed")
        elif not _PATH_LITERAL.fullmatch(glob):
            # Envoy's uri_template accepts only RFC 3986 pchars in literal segments.
            rep.fail(path, f"invalid path template {value!r}: invalid literal {glob!r}")


def _condition(cond: Condition, action: Action, path: str, rep: Reporter) -> None:
    key = cond.key
    if not key:
        rep.fail(f"{path}.key", "key must not be empty")
    if not cond.values and not cond.not_values:
        rep.fail(path, f"at least one of values or notValues must be set for key {key}")
    if action is Action.CUSTOM and key.startswith(_CUSTOM_FORBIDDEN_KEYS):
        rep.fail(f"{path}.key", f"{key} is not supported with CUSTOM action")
    for name, values in (("values", cond.values), ("notValues", cond.not_values)):
        vpath = f"{path}.{name}"
        _values(rep, vpath, values)
        if key in _IP_KEYS:
            for i, ip in enumerate(values):
                check(rep, f"{vpath}[{i}]", hosts.check_ip_or_cidr, ip)
        elif key == "destination.port":
            for i, port in enumerate(values):
                if not port.isdigit() or int(port) > 65535:
                    rep.fail(f"{vpath}[{i}]", f"bad port {port!r}")
        elif key == "source.serviceAccount":
            for i, sa in enumerate(values):
                _service_account(rep, f"{vpath}[{i}]", sa)
    if key.startswith(_MAP_KEYS):
        open_ = key.find("[")
        if not (key.endswith("]") and 0 < open_ < len(key) - 2):
            rep.fail(f"{path}.key", f"bad key {key!r}: expected the form a[b]")
    elif key == "destination.namespace":
        rep.fail(f"{path}.key", f"{key} is replaced by the policy's namespace")
    elif key.startswith("destination.labels"):
        rep.fail(f"{path}.key", f"{key} is replaced by the workload selector")
    elif key not in _PLAIN_KEYS | _IP_KEYS | {
        "destination.port",
        "source.serviceAccount",
        "source.trustDomain",
    }:
        rep.fail(f"{path}.key", f"unknown attribute {key!r}")
