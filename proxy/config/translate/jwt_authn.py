"""``envoy.filters.http.jwt_authn`` (``JwtAuthentication``, ``PerRouteConfig``) → the values
:mod:`proxy.security.jwt_authn` decides with. Fields outside ``JWT_SUPPORTED`` (the JWT cache,
``subjects``, ``max_lifetime``, ``async_fetch``, filter-state rules ...) are refused with their
path. Inline keys that do not parse are kept as "no valid keys", which fails the tokens of that
provider, as Envoy does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.config.model_route import (
    DirectResponseAction,
    Route,
    RouteConfiguration,
    VirtualHost,
)
from proxy.config.translate.common import at, duration, join
from proxy.config.translate.routes import route_match
from proxy.routing.matcher import RouteTable
from proxy.security.jwks import DEFAULT_CACHE_DURATION, RemoteJwks
from proxy.security.jwt import CLOCK_SKEW, Jwks, JwksError, parse_jwks
from proxy.security.jwt_authn import (
    AllowAll,
    AllowMissing,
    AllowMissingOrFailed,
    JwtProvider,
    Requirement,
    RequiresAll,
    RequiresAny,
    RequiresProvider,
)
from proxy.security.jwt_extract import Extractor, HeaderLocation, Locations
from pymesh.errors import ValidationError

__all__ = [
    "JWT_SUPPORTED",
    "JwtAuthnConfig",
    "JwtPerRoute",
    "jwt_authn",
    "jwt_authn_per_route",
]

_JWT = "envoy.extensions.filters.http.jwt_authn.v3."

JWT_SUPPORTED: dict[str, frozenset[str]] = {
    name: frozenset(fields.split())
    for name, fields in {
        _JWT + "JwtAuthentication": "providers rules requirement_map bypass_cors_preflight "
        "strip_failure_response stat_prefix",
        _JWT + "JwtProvider": "issuer audiences remote_jwks local_jwks forward from_headers "
        "from_params from_cookies forward_payload_header pad_forward_payload_header "
        "payload_in_metadata header_in_metadata normalize_payload_in_metadata "
        "clock_skew_seconds claim_to_headers clear_route_cache",
        _JWT + "JwtProvider.NormalizePayload": "space_delimited_claims",
        _JWT + "RemoteJwks": "http_uri cache_duration",
        "envoy.config.core.v3.HttpUri": "uri cluster timeout",
        _JWT + "JwtHeader": "name value_prefix",
        _JWT + "JwtClaimToHeader": "header_name claim_name",
        _JWT + "RequirementRule": "match requires requirement_name",
        _JWT + "JwtRequirement": "provider_name provider_and_audiences requires_any "
        "requires_all allow_missing_or_failed allow_missing",
        _JWT + "JwtRequirementOrList": "requirements",
        _JWT + "JwtRequirementAndList": "requirements",
        _JWT + "ProviderWithAudiences": "provider_name audiences",
        _JWT + "PerRouteConfig": "disabled requirement_name",
    }.items()
}


@dataclass(frozen=True, slots=True)
class JwtAuthnConfig:
    """``rules`` are matched like routes (``rule_table``, one route per rule, in order); the
    requirement of the first match applies. ``providers`` are in name order."""

    providers: Mapping[str, JwtProvider]
    rule_table: RouteTable
    rule_host: VirtualHost
    # by rule index (each rule's route is named after its index)
    rule_requirements: tuple[Requirement, ...]
    requirement_map: Mapping[str, Requirement]
    bypass_cors_preflight: bool = False
    strip_failure_response: bool = False
    stat_prefix: str = ""


@dataclass(frozen=True, slots=True)
class JwtPerRoute:
    """``disabled``, or the name of a requirement in the filter's ``requirement_map``."""

    disabled: bool = False
    requirement_name: str = ""


def _provider(name: str, message: Any, path: str) -> JwtProvider:
    headers = tuple(
        HeaderLocation(h.name.lower().encode("latin-1"), h.value_prefix)
        for h in message.from_headers
    )
    written = tuple(
        h.lower().encode("latin-1")
        for h in ([message.forward_payload_header] if message.forward_payload_header else [])
        + [c.header_name for c in message.claim_to_headers]
    )
    locations = Locations(
        issuer=message.issuer,
        headers=headers,
        params=tuple(message.from_params),
        cookies=tuple(message.from_cookies),
        written_headers=written,
    )
    local: Jwks | None = None
    remote: RemoteJwks | None = None
    kind = message.WhichOneof("jwks_source_specifier")
    if kind == "remote_jwks":
        spec = message.remote_jwks
        uri_path = join(join(path, "remote_jwks"), "http_uri")
        if not spec.http_uri.uri:
            raise ValidationError("uri must not be empty", path=join(uri_path, "uri"))
        if not spec.http_uri.cluster:
            raise ValidationError("cluster must not be empty", path=join(uri_path, "cluster"))
        remote = RemoteJwks(
            uri=spec.http_uri.uri,
            cluster=spec.http_uri.cluster,
            timeout=duration(spec.http_uri.timeout),
            cache_duration=(
                duration(spec.cache_duration)
                if spec.HasField("cache_duration")
                else DEFAULT_CACHE_DURATION
            ),
        )
    elif kind == "local_jwks":
        source = message.local_jwks
        text = _data_source(source, join(path, "local_jwks"))
        try:
            local = parse_jwks(text)
        except JwksError:
            local = None  # Envoy keeps the provider; its tokens fail with "no valid keys"
    else:
        raise ValidationError(
            "one of [remote_jwks, local_jwks] is required", path=join(path, "jwks_source_specifier")
        )
    return JwtProvider(
        name=name,
        issuer=message.issuer,
        locations=locations,
        audiences=tuple(message.audiences),
        forward=message.forward,
        forward_payload_header=(
            message.forward_payload_header.lower().encode("latin-1")
            if message.forward_payload_header
            else None
        ),
        pad_forward_payload_header=message.pad_forward_payload_header,
        payload_in_metadata=message.payload_in_metadata,
        header_in_metadata=message.header_in_metadata,
        space_delimited_claims=tuple(message.normalize_payload_in_metadata.space_delimited_claims),
        clock_skew=message.clock_skew_seconds or CLOCK_SKEW,
        claim_to_headers=tuple(
            (c.header_name.lower().encode("latin-1"), c.claim_name)
            for c in message.claim_to_headers
        ),
        clear_route_cache=message.clear_route_cache,
        local_jwks=local,
        remote=remote,
    )


def _data_source(source: Any, path: str) -> str:
    kind = source.WhichOneof("specifier")
    if kind == "inline_string":
        return str(source.inline_string)
    if kind == "inline_bytes":
        return bytes(source.inline_bytes).decode("utf-8", "replace")
    if kind == "filename":
        try:
            with open(source.filename, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ValidationError(
                f"cannot read {source.filename}: {e}", path=join(path, "filename")
            ) from None
    raise ValidationError("one of [filename, inline_bytes, inline_string] is required", path=path)


class _Builder:
    def __init__(self, providers: Mapping[str, JwtProvider]) -> None:
        self.providers = providers
        self._all = Extractor([p.locations for p in providers.values()])
        self._single = {n: Extractor([p.locations]) for n, p in providers.items()}

    def provider(self, name: str, path: str, audiences: tuple[str, ...] | None) -> Requirement:
        found = self.providers.get(name)
        if found is None:
            raise ValidationError(f"Required provider ['{name}'] is not configured.", path=path)
        return RequiresProvider(found, self._single[name], audiences)

    def requirement(self, message: Any, path: str) -> Requirement:
        kind = message.WhichOneof("requires_type")
        sub = join(path, kind) if kind else path
        if kind == "provider_name":
            return self.provider(message.provider_name, sub, None)
        if kind == "provider_and_audiences":
            spec = message.provider_and_audiences
            return self.provider(spec.provider_name, sub, tuple(spec.audiences))
        if kind == "allow_missing":
            return AllowMissing(self._all)
        if kind == "allow_missing_or_failed":
            return AllowMissingOrFailed(self._all)
        if kind == "requires_all":
            return RequiresAll(self._list(message.requires_all, sub))
        if kind == "requires_any":
            children = []
            allow_missing = allow_failed = False
            items = message.requires_any.requirements
            if len(items) < 2:
                raise ValidationError(
                    "requirements must have at least 2 items", path=join(sub, "requirements")
                )
            for index, item in enumerate(items):
                relax = item.WhichOneof("requires_type")
                if relax == "allow_missing":
                    allow_missing = True
                elif relax == "allow_missing_or_failed":
                    allow_failed = True
                else:
                    children.append(self.requirement(item, at(join(sub, "requirements"), index)))
            if not children:
                # Only a relaxation: it becomes the one member, checking every provider.
                only = AllowMissingOrFailed(self._all) if allow_failed else AllowMissing(self._all)
                children.append(only)
            return RequiresAny(tuple(children), allow_missing, allow_failed)
        return AllowAll()

    def _list(self, message: Any, path: str) -> tuple[Requirement, ...]:
        items = message.requirements
        if len(items) < 2:
            raise ValidationError(
                "requirements must have at least 2 items", path=join(path, "requirements")
            )
        return tuple(
            self.requirement(item, at(join(path, "requirements"), index))
            for index, item in enumerate(items)
        )


def jwt_authn(message: Any, path: str) -> JwtAuthnConfig:
    providers = {
        name: _provider(name, message.providers[name], at(join(path, "providers"), name))
        for name in sorted(message.providers)
    }
    build = _Builder(providers)
    requirement_map = {
        name: build.requirement(
            message.requirement_map[name], at(join(path, "requirement_map"), name)
        )
        for name in sorted(message.requirement_map)
    }
    routes = []
    requirements = []
    for index, rule in enumerate(message.rules):
        rule_path = at(join(path, "rules"), index)
        if not rule.HasField("match"):
            raise ValidationError("match is required", path=join(rule_path, "match"))
        routes.append(
            Route(
                route_match(rule.match, join(rule_path, "match")),
                DirectResponseAction(200),
                name=str(index),
            )
        )
        if rule.requirement_name:
            found = requirement_map.get(rule.requirement_name)
            if found is None:
                raise ValidationError(
                    f"Wrong requirement_name: {rule.requirement_name}. It should be one of "
                    "[requirement_map]",
                    path=join(rule_path, "requirement_name"),
                )
            requirements.append(found)
        else:
            requires = rule.requires if rule.HasField("requires") else None
            requirements.append(
                build.requirement(requires, join(rule_path, "requires"))
                if requires is not None
                else AllowAll()
            )
    host = VirtualHost("jwt_authn", (b"*",), tuple(routes))
    table = RouteTable.build(RouteConfiguration(virtual_hosts=(host,)))
    return JwtAuthnConfig(
        providers=providers,
        rule_table=table,
        rule_host=host,
        rule_requirements=tuple(requirements),
        requirement_map=requirement_map,
        bypass_cors_preflight=message.bypass_cors_preflight,
        strip_failure_response=message.strip_failure_response,
        stat_prefix=message.stat_prefix,
    )


def jwt_authn_per_route(message: Any, path: str) -> JwtPerRoute:
    kind = message.WhichOneof("requirement_specifier")
    if kind is None:
        raise ValidationError(
            "one of [disabled, requirement_name] is required",
            path=join(path, "requirement_specifier"),
        )
    return JwtPerRoute(disabled=message.disabled, requirement_name=message.requirement_name)
