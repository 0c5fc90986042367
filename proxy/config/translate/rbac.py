"""``envoy.filters.http.rbac`` / ``envoy.filters.network.rbac`` configs → the RBAC engine's
values (``proxy.security.rbac``). Fields outside ``support.SUPPORTED`` are refused with their
path before this runs (the CEL ``condition``, the ``matcher`` API, ``filter_state`` ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2

from proxy.config.translate.common import at, cidr_range, header_matcher, join, string_matcher
from proxy.config.translate.support import unpack
from proxy.security.matchers import MetadataMatcher, ValueMatcher, compile_uri_template
from proxy.security.rbac import (
    AndMatcher,
    AnyMatcher,
    AuthenticatedMatcher,
    DestinationIpMatcher,
    DestinationPortMatcher,
    DestinationPortRangeMatcher,
    HeaderRule,
    IpMatcher,
    Matcher,
    MetadataRule,
    NotMatcher,
    OrMatcher,
    Policy,
    RbacAction,
    RbacRules,
    RequestedServerNameMatcher,
    UriTemplateRule,
    UrlPathMatcher,
)
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "RBAC_SUPPORTED",
    "RbacFilterConfig",
    "http_rbac",
    "http_rbac_per_route",
    "metadata_matcher",
    "network_rbac",
    "permission",
    "principal",
    "rbac_rules",
    "value_matcher",
]

_URI_TEMPLATE = "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
_RBAC = "envoy.config.rbac.v3."
_MATCHER = "envoy.type.matcher.v3."

#: The fields the RBAC filters implement, per message (``support.check_supported``'s
#: ``extra``): any other set field — the CEL ``condition``, ``matcher``, ``filter_state``,
#: ``sourced_metadata``, per-rule stats — is refused with its path.
RBAC_SUPPORTED: dict[str, frozenset[str]] = {
    name: frozenset(fields.split())
    for name, fields in {
        "envoy.extensions.filters.http.rbac.v3.RBAC": "rules shadow_rules rules_stat_prefix "
        "shadow_rules_stat_prefix",
        "envoy.extensions.filters.http.rbac.v3.RBACPerRoute": "rbac",
        "envoy.extensions.filters.network.rbac.v3.RBAC": "rules shadow_rules stat_prefix "
        "shadow_rules_stat_prefix enforcement_type",
        _RBAC + "RBAC": "action policies",
        _RBAC + "Policy": "permissions principals",
        _RBAC + "Permission": "any and_rules or_rules not_rule header url_path destination_ip "
        "destination_port destination_port_range metadata requested_server_name uri_template",
        _RBAC + "Permission.Set": "rules",
        _RBAC + "Principal": "any and_ids or_ids not_id authenticated direct_remote_ip "
        "source_ip remote_ip header url_path metadata",
        _RBAC + "Principal.Set": "ids",
        _RBAC + "Principal.Authenticated": "principal_name",
        "envoy.config.route.v3.HeaderMatcher": "name exact_match safe_regex_match range_match "
        "present_match prefix_match suffix_match contains_match string_match invert_match "
        "treat_missing_header_as_empty",
        "envoy.type.v3.Int32Range": "start end",
        _MATCHER + "PathMatcher": "path",
        _URI_TEMPLATE: "path_template",
    }.items()
}


@dataclass(frozen=True, slots=True)
class RbacFilterConfig:
    """One RBAC filter: the enforced engine and the shadow engine (either may be absent);
    ``stat_prefix`` (network filter) and the prefixes Envoy puts before the stat and
    dynamic-metadata names of each engine. ``continuous`` (network filter): check every read,
    not only the first."""

    rules: RbacRules | None
    shadow_rules: RbacRules | None
    rules_stat_prefix: str = ""
    shadow_rules_stat_prefix: str = ""
    stat_prefix: str = ""
    continuous: bool = False


def value_matcher(message: Any, path: str) -> ValueMatcher:
    kind = message.WhichOneof("match_pattern")
    if kind is None:
        raise ValidationError("value matcher needs a match pattern", path=path)
    sub = join(path, kind)
    if kind == "string_match":
        return ValueMatcher("string", string=string_matcher(message.string_match, sub))
    if kind == "or_match":
        items = message.or_match.value_matchers
        if len(items) < 2:
            raise ValidationError("value_matchers must have at least 2 items", path=sub)
        return ValueMatcher(
            "or",
            inner=tuple(
                value_matcher(m, at(join(sub, "value_matchers"), i)) for i, m in enumerate(items)
            ),
        )
    if kind == "list_match":
        one_of = join(sub, "one_of")
        if not message.list_match.HasField("one_of"):
            raise ValidationError("one_of is required", path=one_of)
        return ValueMatcher("list", inner=(value_matcher(message.list_match.one_of, one_of),))
    if kind == "bool_match":
        return ValueMatcher("bool", boolean=message.bool_match)
    if kind == "present_match":
        return ValueMatcher("present", boolean=message.present_match)
    if kind == "null_match":
        return ValueMatcher("null")
    double = message.double_match
    if double.WhichOneof("match_pattern") == "exact":
        return ValueMatcher("double", exact=double.exact)
    if not double.HasField("range"):
        raise ValidationError("double matcher needs range or exact", path=sub)
    return ValueMatcher("double", start=double.range.start, end=double.range.end)


def metadata_matcher(message: Any, path: str) -> MetadataMatcher:
    if not message.filter:
        raise ValidationError("filter must not be empty", path=join(path, "filter"))
    if not message.path:
        raise ValidationError("path must have at least 1 item", path=join(path, "path"))
    keys = []
    for index, segment in enumerate(message.path):
        if not segment.key:
            raise ValidationError("key must not be empty", path=at(join(path, "path"), index))
        keys.append(segment.key)
    if not message.HasField("value"):
        raise ValidationError("value is required", path=join(path, "value"))
    return MetadataMatcher(
        message.filter,
        tuple(keys),
        value_matcher(message.value, join(path, "value")),
        invert=message.invert,
    )


def _set(items: Any, path: str, field: str, convert: Any) -> tuple[Matcher, ...]:
    if not items:
        raise ValidationError(f"{field} must have at least 1 item", path=join(path, field))
    return tuple(convert(item, at(join(path, field), i)) for i, item in enumerate(items))


def permission(message: Any, path: str) -> Matcher:
    kind = message.WhichOneof("rule")
    if kind is None:
        raise ValidationError("permission needs a rule", path=path)
    sub = join(path, kind)
    match kind:
        case "any":
            return AnyMatcher()
        case "and_rules" | "or_rules":
            rules = _set(getattr(message, kind).rules, sub, "rules", permission)
            return AndMatcher(rules) if kind == "and_rules" else OrMatcher(rules)
        case "not_rule":
            return NotMatcher(permission(message.not_rule, sub))
        case "header":
            return HeaderRule(header_matcher(message.header, sub))
        case "url_path":
            return _url_path(message.url_path, sub)
        case "destination_ip":
            return DestinationIpMatcher(cidr_range(message.destination_ip, sub))
        case "destination_port":
            if message.destination_port > 65535:
                raise ValidationError("value must be less than or equal to 65535", path=sub)
            return DestinationPortMatcher(message.destination_port)
        case "destination_port_range":
            r = message.destination_port_range
            return DestinationPortRangeMatcher(r.start, r.end)
        case "metadata":
            return MetadataRule(metadata_matcher(message.metadata, sub))
        case "requested_server_name":
            return RequestedServerNameMatcher(string_matcher(message.requested_server_name, sub))
        case "uri_template":
            config = message.uri_template
            if config.typed_config.type_url != "type.googleapis.com/" + _URI_TEMPLATE:
                raise UnsupportedError(
                    f"uri_template extension {config.typed_config.type_url!r} is not "
                    "supported by pymesh",
                    path=join(sub, "typed_config"),
                )
            template = unpack(
                config.typed_config,
                uri_template_match_pb2.UriTemplateMatchConfig,
                join(sub, "typed_config"),
                RBAC_SUPPORTED,
            )
            try:
                return UriTemplateRule(compile_uri_template(template.path_template))
            except ValueError as e:
                raise ValidationError(
                    str(e), path=join(sub, "typed_config.path_template")
                ) from None
    raise UnsupportedError(f"permission rule '{kind}' is not supported by pymesh", path=sub)


def _url_path(message: Any, path: str) -> Matcher:
    if not message.HasField("path"):
        raise ValidationError("path is required", path=join(path, "path"))
    return UrlPathMatcher(string_matcher(message.path, join(path, "path")))


def principal(message: Any, path: str) -> Matcher:
    kind = message.WhichOneof("identifier")
    if kind is None:
        raise ValidationError("principal needs an identifier", path=path)
    sub = join(path, kind)
    match kind:
        case "any":
            return AnyMatcher()
        case "and_ids" | "or_ids":
            ids = _set(getattr(message, kind).ids, sub, "ids", principal)
            return AndMatcher(ids) if kind == "and_ids" else OrMatcher(ids)
        case "not_id":
            return NotMatcher(principal(message.not_id, sub))
        case "authenticated":
            auth = message.authenticated
            name = (
                string_matcher(auth.principal_name, join(sub, "principal_name"))
                if auth.HasField("principal_name")
                else None
            )
            return AuthenticatedMatcher(name)
        case "direct_remote_ip" | "source_ip":
            # source_ip is the deprecated name of direct_remote_ip.
            return IpMatcher(cidr_range(getattr(message, kind), sub), direct=True)
        case "remote_ip":
            return IpMatcher(cidr_range(message.remote_ip, sub), direct=False)
        case "header":
            return HeaderRule(header_matcher(message.header, sub))
        case "url_path":
            return _url_path(message.url_path, sub)
        case "metadata":
            return MetadataRule(metadata_matcher(message.metadata, sub))
    raise UnsupportedError(f"principal identifier '{kind}' is not supported by pymesh", path=sub)


def rbac_rules(message: Any, path: str) -> RbacRules:
    """``config.rbac.v3.RBAC`` → one engine."""
    policies = {}
    for name in sorted(message.policies):
        policy = message.policies[name]
        p_path = at(join(path, "policies"), name)
        policies[name] = Policy(
            name,
            _set(policy.permissions, p_path, "permissions", permission),
            _set(policy.principals, p_path, "principals", principal),
        )
    action = RbacAction(type(message).Action.Name(message.action))
    return RbacRules.build(action, policies)


def _engines(message: Any, path: str) -> tuple[RbacRules | None, RbacRules | None]:
    rules = rbac_rules(message.rules, join(path, "rules")) if message.HasField("rules") else None
    shadow = (
        rbac_rules(message.shadow_rules, join(path, "shadow_rules"))
        if message.HasField("shadow_rules")
        else None
    )
    return rules, shadow


def http_rbac(message: Any, path: str) -> RbacFilterConfig:
    """``extensions.filters.http.rbac.v3.RBAC``."""
    rules, shadow = _engines(message, path)
    return RbacFilterConfig(
        rules,
        shadow,
        rules_stat_prefix=message.rules_stat_prefix,
        shadow_rules_stat_prefix=message.shadow_rules_stat_prefix,
    )


def http_rbac_per_route(message: Any, path: str) -> RbacFilterConfig:
    """``RBACPerRoute``: its ``rbac`` replaces the filter's engines on the route; without one
    the filter enforces nothing there (Envoy's "disabled for this route")."""
    if not message.HasField("rbac"):
        return RbacFilterConfig(None, None)
    return http_rbac(message.rbac, join(path, "rbac"))


def network_rbac(message: Any, path: str) -> RbacFilterConfig:
    """``extensions.filters.network.rbac.v3.RBAC``."""
    if not message.stat_prefix:
        raise ValidationError(
            "value length must be at least 1 runes", path=join(path, "stat_prefix")
        )
    rules, shadow = _engines(message, path)
    return RbacFilterConfig(
        rules,
        shadow,
        shadow_rules_stat_prefix=message.shadow_rules_stat_prefix,
        stat_prefix=message.stat_prefix,
        continuous=message.enforcement_type == 1,  # CONTINUOUS
    )
