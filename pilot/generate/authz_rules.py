"""One AuthorizationPolicy rule → one Envoy RBAC ``Policy`` (permissions + principals), the
way istiod writes it, so a real Envoy and the pymesh proxy enforce the same thing.

A rule's ``to`` entries become the policy's permissions and its ``from`` entries its
principals (each list ORed by Envoy); inside one entry every field is ANDed, values of a field
ORed, and ``not…`` values wrapped in ``not_rule`` / ``not_id``. ``when`` conditions join every
entry: destination attributes as permissions, the rest as principals. JWT attributes read the
``envoy.filters.http.jwt_authn`` dynamic metadata under ``payload`` (see ``authn.py``).

On a TCP filter chain the HTTP-only attributes cannot be evaluated: an ALLOW rule using one is
dropped (it grants less), a DENY or AUDIT rule drops just that condition (it denies more).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymesh.config.model.security import Action, Condition, Rule, Source

__all__ = [
    "JWT_FILTER",
    "JWT_PAYLOAD",
    "MATCH_NEVER",
    "HttpOnlyError",
    "rule_policy",
    "string_matcher",
]

JWT_FILTER = "envoy.filters.http.jwt_authn"
#: jwt_authn's ``payload_in_metadata``: verified claims live under this key.
JWT_PAYLOAD = "payload"
SPIFFE = "spiffe://"
_ANY: dict[str, Any] = {"safe_regex": {"regex": ".+"}}
_TEMPLATE_URL = (
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
)

#: The policy istiod writes for a policy without rules: it matches no request.
MATCH_NEVER: dict[str, Any] = {
    "permissions": [{"not_rule": {"any": True}}],
    "principals": [{"not_id": {"any": True}}],
}

Json = dict[str, Any]


class HttpOnlyError(Exception):
    """An HTTP attribute in a rule built for a TCP filter chain."""


# -- matchers -------------------------------------------------------------------------------
_META = frozenset("\\.+*?()|[]{}^$")


def _quote_meta(text: str) -> str:
    """RE2's (and Go's ``regexp.QuoteMeta``) escaping, which leaves ``-`` alone as istiod does."""
    return "".join("\\" + c if c in _META else c for c in text)


def string_matcher(value: str, prefix: str = "", *, ignore_case: bool = False) -> Json:
    """Istio's value syntax: ``*`` any (non-empty), ``*x`` suffix, ``x*`` prefix, else exact;
    ``prefix`` (``spiffe://``) is prepended to what is matched."""
    case: Json = {"ignore_case": True} if ignore_case else {}
    if value == "*":
        return dict(_ANY)
    if value.startswith("*"):
        if prefix:
            return {"safe_regex": {"regex": prefix + ".*" + _quote_meta(value[1:])}}
        return {"suffix": value[1:], **case}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1], **case}
    return {"exact": prefix + value, **case}


def _header(name: str, value: str, *, ignore_case: bool = False) -> Json:
    if value == "*":
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": string_matcher(value, ignore_case=ignore_case)}


def _cidr(value: str) -> Json:
    if "/" in value:
        address, _, length = value.partition("/")
        ipaddress.ip_network(value, strict=False)  # refuses what validation let through
        return {"address_prefix": address, "prefix_len": int(length)}
    ip = ipaddress.ip_address(value)
    return {"address_prefix": value, "prefix_len": 32 if ip.version == 4 else 128}


def _metadata(filter_name: str, keys: Sequence[str], value: Json) -> Json:
    return {"filter": filter_name, "path": [{"key": k} for k in keys], "value": value}


def _or_values(values: Sequence[str]) -> Json:
    matchers = [{"string_match": string_matcher(v)} for v in values]
    return matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}


def _filter_values(values: Sequence[str]) -> Json:
    """``experimental.envoy.filters`` values: ``[v]`` matches a list holding ``v``."""
    matchers = [
        {"list_match": {"one_of": {"string_match": string_matcher(v[1:-1])}}}
        if v.startswith("[") and v.endswith("]")
        else {"string_match": string_matcher(v)}
        for v in values
    ]
    return matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}


def _claim(keys: Sequence[str], values: Sequence[str]) -> Json:
    """A claim matches as a string or as a list holding a matching element."""
    value = _or_values(values)
    return _metadata(
        JWT_FILTER,
        [JWT_PAYLOAD, *keys],
        {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}},
    )


def _jwt_string(claim: str, matcher: Json) -> Json:
    return {"metadata": _metadata(JWT_FILTER, [JWT_PAYLOAD, claim], {"string_match": matcher})}


# -- attribute generators: one value (or all values, for JWT attributes) → one matcher -------
def _request_principals(values: Sequence[str]) -> Json:
    ors = []
    for value in values:
        # The issuer may be a URL: the subject follows the last "/".
        iss, slash, sub = value.rpartition("/")
        if not slash:
            iss, sub = value, ""
        if value == "*":
            m_iss, m_sub = _ANY, _ANY
        elif value.startswith("*"):
            if slash:
                m_iss = _ANY if iss == "*" else {"suffix": iss[1:]}
                m_sub = {"exact": sub}
            else:
                m_iss, m_sub = _ANY, {"suffix": value[1:]}
        elif value.endswith("*"):
            if slash:
                m_iss = {"exact": iss}
                m_sub = _ANY if sub == "*" else {"prefix": sub[:-1]}
            else:
                m_iss, m_sub = {"prefix": value[:-1]}, _ANY
        else:
            m_iss, m_sub = {"exact": iss}, {"exact": sub}
        ors.append({"and_ids": {"ids": [_jwt_string("iss", m_iss), _jwt_string("sub", m_sub)]}})
    return ors[0] if len(ors) == 1 else {"or_ids": {"ids": ors}}


def _namespace_regex(value: str) -> Json:
    return {"safe_regex": {"regex": f".*/ns/{value.replace('*', '.*')}/.*"}}


def _service_account_regex(namespace: str, value: str) -> Json:
    ns, slash, sa = value.partition("/")
    if not slash:
        ns, sa = namespace, value
    return {"safe_regex": {"regex": f"spiffe://.+/ns/{ns}/(.+/|)sa/{sa}(/.+)?"}}


def _trust_domain(value: str) -> Json:
    if value == "*":
        return {"prefix": SPIFFE}
    if "*" not in value:
        return {"prefix": f"{SPIFFE}{value}/"}
    head, _, tail = value.partition("*")
    return {"safe_regex": {"regex": f"spiffe://{_quote_meta(head)}[^/]*{_quote_meta(tail)}/.*"}}


def _authenticated(matcher: Json) -> Json:
    return {"authenticated": {"principal_name": matcher}}


def _path(value: str) -> Json:
    if "{*}" in value or "{**}" in value:
        template = value.replace("{**}", "**").replace("{*}", "*")
        return {
            "uri_template": {
                "name": "uri-template",
                "typed_config": {"@type": _TEMPLATE_URL, "path_template": template},
            }
        }
    return {"url_path": {"path": string_matcher(value)}}


@dataclass(frozen=True, slots=True)
class _Attr:
    """How one attribute becomes matchers: ``one`` per value (ORed), or ``all`` at once for
    JWT attributes; ``http`` when a TCP chain cannot evaluate it."""

    http: bool
    one: Callable[[str], Json] | None = None
    all: Callable[[Sequence[str]], Json] | None = None


def _principal_attrs(namespace: str) -> dict[str, _Attr]:
    return {
        "source.ip": _Attr(False, lambda v: {"direct_remote_ip": _cidr(v)}),
        "remote.ip": _Attr(False, lambda v: {"remote_ip": _cidr(v)}),
        "source.namespace": _Attr(False, lambda v: _authenticated(_namespace_regex(v))),
        "source.trustDomain": _Attr(False, lambda v: _authenticated(_trust_domain(v))),
        "source.serviceAccount": _Attr(
            False, lambda v: _authenticated(_service_account_regex(namespace, v))
        ),
        "source.principal": _Attr(False, lambda v: _authenticated(string_matcher(v, SPIFFE))),
        "request.auth.principal": _Attr(True, all=_request_principals),
        "request.auth.audiences": _Attr(True, all=lambda vs: {"metadata": _claim(["aud"], vs)}),
        "request.auth.presenter": _Attr(True, all=lambda vs: {"metadata": _claim(["azp"], vs)}),
    }


_PERMISSION_ATTRS: dict[str, _Attr] = {
    "destination.ip": _Attr(False, lambda v: {"destination_ip": _cidr(v)}),
    "destination.port": _Attr(False, lambda v: {"destination_port": int(v)}),
    "connection.sni": _Attr(False, lambda v: {"requested_server_name": string_matcher(v)}),
    ":authority": _Attr(True, lambda v: {"header": _header(":authority", v, ignore_case=True)}),
    ":method": _Attr(True, lambda v: {"header": _header(":method", v)}),
    "path": _Attr(True, _path),
}


def _bracketed(key: str, prefix: str) -> list[str]:
    """``request.auth.claims[a][b]`` → ``["a", "b"]``."""
    rest = key[len(prefix) :]
    return re.findall(r"\[([^\]]*)\]", rest) or [rest.strip("[]")]


def _attr_for(key: str, namespace: str) -> tuple[bool, _Attr]:
    """(is a permission, how) for a ``when`` key."""
    if key in _PERMISSION_ATTRS:
        return True, _PERMISSION_ATTRS[key]
    if key.startswith("experimental.envoy.filters."):
        name, _, item = key[len("experimental.") : -1].partition("[")
        return True, _Attr(
            False, all=lambda vs: {"metadata": _metadata(name, [item], _filter_values(vs))}
        )
    principals = _principal_attrs(namespace)
    if key in principals:
        return False, principals[key]
    if key.startswith("request.headers"):
        header = _bracketed(key, "request.headers")[0].lower()
        return False, _Attr(True, lambda v: {"header": _header(header, v)})
    if key.startswith("request.auth.claims"):
        claims = _bracketed(key, "request.auth.claims")
        return False, _Attr(True, all=lambda vs: {"metadata": _claim(claims, vs)})
    raise ValueError(f"unknown attribute {key}")


# -- assembly -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Clause:
    attr: _Attr
    values: tuple[str, ...]
    not_values: tuple[str, ...]


def _matchers(clause: _Clause, *, principal: bool, tcp: bool, action: Action) -> list[Json]:
    if tcp and clause.attr.http:
        if action is Action.ALLOW:
            raise HttpOnlyError
        return []  # a DENY / AUDIT rule denies more rather than grant by accident
    or_key, not_key, set_key = (
        ("or_ids", "not_id", "ids") if principal else ("or_rules", "not_rule", "rules")
    )

    def one_of(values: tuple[str, ...]) -> Json:
        if clause.attr.all is not None:
            return clause.attr.all(values)
        assert clause.attr.one is not None
        return {or_key: {set_key: [clause.attr.one(v) for v in values]}}

    found = []
    if clause.values:
        found.append(one_of(clause.values))
    if clause.not_values:
        found.append({not_key: one_of(clause.not_values)})
    return found


def _source_clauses(src: Source | None, namespace: str) -> list[_Clause]:
    if src is None:
        return []
    attrs = _principal_attrs(namespace)
    pairs = (
        ("source.principal", src.principals, src.not_principals),
        ("request.auth.principal", src.request_principals, src.not_request_principals),
        ("source.serviceAccount", src.service_accounts, src.not_service_accounts),
        ("source.trustDomain", src.trust_domains, src.not_trust_domains),
        ("source.namespace", src.namespaces, src.not_namespaces),
        ("remote.ip", src.remote_ip_blocks, src.not_remote_ip_blocks),
        ("source.ip", src.ip_blocks, src.not_ip_blocks),
    )
    return [_Clause(attrs[k], v, n) for k, v, n in pairs if v or n]


def rule_policy(rule: Rule, namespace: str, action: Action, *, tcp: bool = False) -> Json | None:
    """The RBAC policy for one rule; None when an ALLOW rule cannot apply on a TCP chain."""
    base_permissions: list[_Clause] = []
    base_principals: list[_Clause] = []
    for cond in rule.when:
        is_permission, attr = _attr_for(cond.key, namespace)
        target = base_permissions if is_permission else base_principals
        target.append(_condition_clause(cond, attr))
    permission_sets = []
    for rule_to in rule.to or (None,):
        op = rule_to.operation if rule_to is not None else None
        clauses = []
        if op is not None:
            for key, values, not_values in (
                (":authority", op.hosts, op.not_hosts),
                (":method", op.methods, op.not_methods),
                ("path", op.paths, op.not_paths),
                ("destination.port", op.ports, op.not_ports),
            ):
                if values or not_values:
                    clauses.append(_Clause(_PERMISSION_ATTRS[key], values, not_values))
        permission_sets.append(clauses + base_permissions)
    principal_sets = [
        _source_clauses(rule_from.source, namespace) + base_principals
        for rule_from in rule.from_ or ()
    ] or [list(base_principals)]
    try:
        permissions = [_and(s, principal=False, tcp=tcp, action=action) for s in permission_sets]
        principals = [_and(s, principal=True, tcp=tcp, action=action) for s in principal_sets]
    except HttpOnlyError:
        return None
    return {"permissions": permissions, "principals": principals}


def _condition_clause(cond: Condition, attr: _Attr) -> _Clause:
    return _Clause(attr, cond.values, cond.not_values)


def _and(clauses: list[_Clause], *, principal: bool, tcp: bool, action: Action) -> Json:
    found: list[Json] = []
    for clause in clauses:
        found.extend(_matchers(clause, principal=principal, tcp=tcp, action=action))
    if principal:
        return {"and_ids": {"ids": found or [{"any": True}]}}
    return {"and_rules": {"rules": found or [{"any": True}]}}
