"""``jwt_authn``'s decision, pure: providers, requirements and how a request meets them, with
the order of checks and the statuses of Envoy's authenticator and verifiers.

A verification is a generator: it runs to its end with the request's :class:`VerifyContext`
unless it needs the JWKS of a remote provider that has none cached; then it yields the
provider and expects to be resumed once the fetch ended (the filter does the I/O). It edits
the request headers as Envoy does as each token is verified (forwarded payload, claims,
removal of the token header) and collects the verified payloads for dynamic metadata.

Requirements (``JwtRequirement``): a provider (optionally with its own audiences),
``requires_any`` (the first OK wins; otherwise the most telling error: anything but "missing"
or "unknown issuer", then "unknown issuer", then "missing"; ``allow_missing`` /
``allow_missing_or_failed`` members relax it), ``requires_all``, ``allow_missing``,
``allow_missing_or_failed`` and no requirement (allow all). A provider verifies every token in
its locations and all must be good.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.http.query import edit_query
from proxy.security.jwks import JwksCache, RemoteJwks
from proxy.security.jwt import (
    CLOCK_SKEW,
    Jwks,
    Jwt,
    JwtStatus,
    TokenMemo,
    audiences_allowed,
    check_time,
)
from proxy.security.jwt_extract import Extractor, Locations, Token

__all__ = [
    "AllowAll",
    "AllowMissing",
    "AllowMissingOrFailed",
    "JwtProvider",
    "Requirement",
    "RequiresAll",
    "RequiresAny",
    "RequiresProvider",
    "Verification",
    "VerifyContext",
    "verify",
]

Headers = list[tuple[bytes, bytes]]
Verification = Generator[str, None, JwtStatus]
"""Yields the name of a provider whose JWKS must be fetched; returns the outcome."""


@dataclass(frozen=True, slots=True)
class JwtProvider:
    name: str
    issuer: str
    locations: Locations
    audiences: tuple[str, ...] = ()
    forward: bool = False
    forward_payload_header: bytes | None = None
    pad_forward_payload_header: bool = False
    payload_in_metadata: str = ""
    header_in_metadata: str = ""
    space_delimited_claims: tuple[str, ...] = ()
    clock_skew: int = CLOCK_SKEW
    claim_to_headers: tuple[tuple[bytes, str], ...] = ()
    clear_route_cache: bool = False
    # Inline keys (None when they did not parse: "Jwks doesn't have any valid public key"),
    # or where to fetch them.
    local_jwks: Jwks | None = None
    remote: RemoteJwks | None = None


@dataclass(frozen=True, slots=True)
class RequiresProvider:
    provider: JwtProvider
    extractor: Extractor = field(compare=False)
    audiences: tuple[str, ...] | None = None  # provider_and_audiences


@dataclass(frozen=True, slots=True)
class RequiresAny:
    requirements: tuple[Requirement, ...]
    allow_missing: bool = False
    allow_missing_or_failed: bool = False


@dataclass(frozen=True, slots=True)
class RequiresAll:
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True, slots=True)
class AllowMissing:
    extractor: Extractor = field(compare=False)


@dataclass(frozen=True, slots=True)
class AllowMissingOrFailed:
    extractor: Extractor = field(compare=False)


@dataclass(frozen=True, slots=True)
class AllowAll:
    pass


Requirement = (
    RequiresProvider | RequiresAny | RequiresAll | AllowMissing | AllowMissingOrFailed | AllowAll
)


class VerifyContext:
    """One request's verification: its headers (edited in place), the wall clock (``now``,
    for ``exp`` / ``nbf``) and the monotonic one (``mono``, for the JWKS caches), the
    providers by issuer (for ``allow_missing``), the JWKS caches, the filter's memo of
    token checks and what was learnt."""

    __slots__ = (
        "by_issuer",
        "cache_misses",
        "caches",
        "clear_route_cache",
        "extracted",
        "fetch_failed",
        "headers",
        "memo",
        "mono",
        "now",
        "path",
        "refresh",
    )

    def __init__(
        self,
        headers: Headers,
        path: bytes,
        now: float,
        mono: float,
        by_issuer: Callable[[str], JwtProvider | None],
        caches: Mapping[str, JwksCache],
        memo: TokenMemo | None = None,
    ) -> None:
        self.caches = caches
        self.memo = memo if memo is not None else TokenMemo()
        self.headers = headers
        self.path = path
        self.now = now
        self.mono = mono
        self.by_issuer = by_issuer
        self.extracted: dict[str, Any] | None = None
        self.clear_route_cache = False
        self.cache_misses = 0
        # Providers whose fetch this request waited for and that still have no keys.
        self.fetch_failed: set[str] = set()
        # Providers whose cached keys are due for a refresh (fetched without waiting).
        self.refresh: list[JwtProvider] = []

    def keys(self, provider: JwtProvider) -> Jwks | None:
        state = self.caches[provider.name].state(self.mono)
        if state.fetch and state.keys is not None:
            # Due for a refresh: the cached keys serve this request while it is fetched.
            self.refresh.append(provider)
        return state.keys


def verify(requirement: Requirement, ctx: VerifyContext) -> Verification:
    if isinstance(requirement, RequiresProvider):
        extractor = requirement.extractor
        extractor.sanitize(ctx.headers)
        tokens = extractor.extract(ctx.headers, ctx.path)
        return (
            yield from _authenticate(
                ctx, tokens, requirement.provider, requirement.audiences, False, False
            )
        )
    if isinstance(requirement, RequiresAny):
        return (yield from _any(requirement, ctx))
    if isinstance(requirement, RequiresAll):
        for child in requirement.requirements:
            status = yield from verify(child, ctx)
            if status is not JwtStatus.OK:
                return status
        return JwtStatus.OK
    if isinstance(requirement, AllowMissing | AllowMissingOrFailed):
        extractor = requirement.extractor
        extractor.sanitize(ctx.headers)
        tokens = extractor.extract(ctx.headers, ctx.path)
        failed_ok = isinstance(requirement, AllowMissingOrFailed)
        return (yield from _authenticate(ctx, tokens, None, None, failed_ok, True))
    return JwtStatus.OK


_WEAK = (JwtStatus.MISSED, JwtStatus.UNKNOWN_ISSUER)


def _any(requirement: RequiresAny, ctx: VerifyContext) -> Verification:
    final = JwtStatus.MISSED
    for child in requirement.requirements:
        status = yield from verify(child, ctx)
        if status is JwtStatus.OK:
            return status
        # Prefer a real error to "unknown issuer", and that to "missing".
        if status not in _WEAK or final is JwtStatus.MISSED:
            final = status
    if requirement.allow_missing_or_failed:
        return JwtStatus.OK
    if requirement.allow_missing and final is JwtStatus.MISSED:
        return JwtStatus.OK
    return final


def _authenticate(
    ctx: VerifyContext,
    tokens: list[Token],
    provider: JwtProvider | None,
    audiences: tuple[str, ...] | None,
    allow_failed: bool,
    allow_missing: bool,
) -> Verification:
    """Envoy's authenticator: the last token first; unless failures are allowed, the first
    bad token decides; otherwise the last one checked does."""
    if not tokens:
        status = JwtStatus.MISSED
    else:
        while True:
            token = tokens.pop()
            status = yield from _verify_token(ctx, token, provider, audiences)
            if (status is not JwtStatus.OK and not allow_failed and not allow_missing) or not (
                tokens
            ):
                break
    if allow_failed or (allow_missing and status is JwtStatus.MISSED):
        return JwtStatus.OK
    return status


def _verify_token(
    ctx: VerifyContext,
    token: Token,
    provider: JwtProvider | None,
    audiences: tuple[str, ...] | None,
) -> Verification:
    if provider is not None:
        ctx.cache_misses += 1  # no JWT cache (jwt_cache_config): every token is checked
    jwt = ctx.memo.parse(token.value)
    if not isinstance(jwt, Jwt):
        return jwt
    if not token.issuers.allows(jwt.iss):
        return JwtStatus.UNKNOWN_ISSUER
    found = provider if provider is not None else ctx.by_issuer(jwt.iss)
    if found is None:
        return JwtStatus.UNKNOWN_ISSUER
    status = check_time(jwt, ctx.now, found.clock_skew)
    if status is not JwtStatus.OK:
        return status
    allowed = audiences if audiences is not None else found.audiences
    if not audiences_allowed(allowed, jwt.audiences):
        return JwtStatus.AUDIENCE_NOT_ALLOWED
    cache = ctx.caches[found.name]
    keys = ctx.keys(found)
    if keys is None and cache.fetching and found.name not in ctx.fetch_failed:
        yield found.name  # the filter fetches (or joins the fetch in flight), then resumes
        keys = cache.keys
        if keys is None:
            ctx.fetch_failed.add(found.name)
    if keys is None:
        return JwtStatus.JWKS_NO_VALID_KEYS if cache.remote is None else JwtStatus.JWKS_FETCH_FAIL
    status = ctx.memo.verify_signature(jwt, keys)
    if status is JwtStatus.OK:
        _accept(ctx, token, jwt, found)
    return status


def _accept(ctx: VerifyContext, token: Token, jwt: Jwt, provider: JwtProvider) -> None:
    headers = ctx.headers
    if provider.forward_payload_header is not None:
        payload = jwt.payload_b64
        if provider.pad_forward_payload_header:
            payload += "=" * (-len(payload) % 4)
        headers.append((provider.forward_payload_header, payload.encode("latin-1")))
    for header, claim in provider.claim_to_headers:
        value = _claim_text(jwt.payload, claim)
        if value:
            headers.append((header, value.encode("utf-8")))
    if not provider.forward:
        name = token.header
        if name is not None:
            headers[:] = [(k, v) for k, v in headers if k != name]
        elif token.param is not None:
            ctx.path = edit_query(ctx.path, to_remove=(token.param,))
    if provider.header_in_metadata:
        _extracted(ctx)[provider.header_in_metadata] = dict(jwt.header)
    if provider.payload_in_metadata:
        _extracted(ctx)[provider.payload_in_metadata] = _normalized(
            jwt.payload, provider.space_delimited_claims
        )
    if provider.clear_route_cache:
        ctx.clear_route_cache = True


def _extracted(ctx: VerifyContext) -> dict[str, Any]:
    if ctx.extracted is None:
        ctx.extracted = {}
    return ctx.extracted


def _normalized(payload: Mapping[str, Any], space_delimited: tuple[str, ...]) -> dict[str, Any]:
    out = dict(payload)
    for claim in space_delimited:
        value = out.get(claim)
        if isinstance(value, str):
            out[claim] = value.split()
    return out


def _claim_text(payload: Mapping[str, Any], claim: str) -> str:
    """A claim (``a.b`` reaches into objects) as Envoy writes it into a header: strings as
    they are, integral numbers without a fraction, others with six decimals, booleans as
    ``true`` / ``false``; anything else is not written."""
    value: Any = payload
    for key in claim.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return ""
        value = value[key]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        if number >= 0 and number.is_integer() and number < 2.0**64:
            return str(int(number))
        return f"{number:f}"
    return ""
