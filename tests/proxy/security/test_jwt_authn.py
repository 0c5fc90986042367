"""jwt_authn's decision without I/O: where tokens are found, how requirements combine and which
error wins, what a verified token changes in the request, and the pause for a JWKS fetch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from proxy.http.query import edit_query
from proxy.security.jwks import JwksCache, RemoteJwks
from proxy.security.jwt import JwtStatus, TokenMemo, parse_jwks
from proxy.security.jwt_authn import (
    AllowMissing,
    AllowMissingOrFailed,
    JwtProvider,
    Requirement,
    RequiresAll,
    RequiresAny,
    RequiresProvider,
    VerifyContext,
    verify,
)
from proxy.security.jwt_extract import Extractor, HeaderLocation, Locations
from tests.proxy.security.tokens import jwks_json, make_keys, tamper

KEYS = make_keys()
NOW = 1_800_000_000
A = Locations("iss-a", written_headers=(b"x-payload",))
B = Locations("iss-b", headers=(HeaderLocation(b"x-jwt"),), params=("tok",), cookies=("jwt",))


def _provider(name: str, locations: Locations, **kw: Any) -> JwtProvider:
    key = KEYS["RS256"] if locations.issuer == "iss-a" else KEYS["ES256"]
    return JwtProvider(
        name, locations.issuer, locations, payload_in_metadata="payload",
        local_jwks=parse_jwks(jwks_json(key)), **kw,
    )  # fmt: skip


PA = _provider("a", A, forward_payload_header=b"x-payload", claim_to_headers=((b"x-sub", "sub"),))
PB = _provider("b", B, forward=True)
ALL = Extractor([A, B])


def _tok(issuer: str = "iss-a", **claims: Any) -> str:
    key = KEYS["RS256"] if issuer == "iss-a" else KEYS["ES256"]
    return key.sign({"iss": issuer, "sub": "alice", "exp": NOW + 60, **claims})


def _run(requirement: Requirement, headers: list[tuple[bytes, bytes]], path: bytes = b"/"):
    providers = {"a": PA, "b": PB}
    caches = {n: JwksCache(local=p.local_jwks) for n, p in providers.items()}
    by_issuer = {p.issuer: p for p in providers.values()}
    ctx = VerifyContext(headers, path, NOW, 0.0, by_issuer.get, caches)
    run = verify(requirement, ctx)
    with pytest.raises(StopIteration) as done:
        next(run)
    return done.value.value, ctx


def _a() -> RequiresProvider:
    return RequiresProvider(PA, Extractor([A]))


def _b() -> RequiresProvider:
    return RequiresProvider(PB, Extractor([B]))


ISTIO = RequiresAny(
    (_a(), _b(), RequiresAll((RequiresAny((_a(),), allow_missing=True),
                              RequiresAny((_b(),), allow_missing=True)))),
)  # fmt: skip


def test_extraction_order_and_envoy_s_quirks() -> None:
    headers = [
        (b"authorization", b"xBearer one"),
        (b"authorization", b"Bearer two"),
        (b"x-jwt", b"three"),
        (b"x-jwt", b"four"),
        (b"cookie", b'a=1; jwt="five"'),
    ]
    tokens = ALL.extract(headers, b"/p?tok=six%2E&tok=seven&access_token=eight")
    # Repeated Authorization values are one (joined); the prefix may come anywhere.
    assert [t.value for t in tokens] == ["one,Bearer two", "three", "four", "eight", "six.", "five"]
    assert [t.header for t in tokens] == [b"authorization", b"x-jwt", b"x-jwt", None, None, None]
    assert tokens[3].issuers.allows("iss-a") and not tokens[3].issuers.allows("iss-b")


def test_a_verified_token_changes_the_request() -> None:
    token = _tok()
    headers = [(b"authorization", b"Bearer " + token.encode()), (b"x-payload", b"forged")]
    status, ctx = _run(_a(), headers)
    assert status is JwtStatus.OK
    names = [k for k, _ in headers]
    assert b"authorization" not in names and names.count(b"x-payload") == 1
    assert dict(headers)[b"x-sub"] == b"alice"
    assert ctx.extracted is not None and ctx.extracted["payload"]["sub"] == "alice"
    status, ctx = _run(_a(), [], b"/p?z=2&access_token=" + token.encode() + b"&a=1")
    assert (status, ctx.path) == (JwtStatus.OK, b"/p?a=1&z=2")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], JwtStatus.OK),  # nothing to check
        ([(b"authorization", b"Bearer " + _tok().encode())], JwtStatus.OK),
        ([(b"x-jwt", _tok("iss-b").encode())], JwtStatus.OK),
        ([(b"authorization", b"Bearer " + tamper(_tok()).encode())], JwtStatus.VERIFICATION_FAIL),
        # A token of B where only A looks: the issuer is not A's.
        ([(b"authorization", b"Bearer " + _tok("iss-b").encode())], JwtStatus.UNKNOWN_ISSUER),
        # A's good token wins over B's bad one.
        ([(b"authorization", b"Bearer " + _tok().encode()), (b"x-jwt", b"junk")], JwtStatus.OK),
        ([(b"x-jwt", b"junk")], JwtStatus.BAD_FORMAT),
        ([(b"authorization", b"Bearer " + _tok(exp=NOW - 100).encode())], JwtStatus.EXPIRED),
    ],
)
def test_istio_s_requirement(headers: list[tuple[bytes, bytes]], status: JwtStatus) -> None:
    assert _run(ISTIO, list(headers))[0] is status


def test_relaxations() -> None:
    bad = [(b"authorization", b"Bearer " + tamper(_tok()).encode())]
    assert _run(AllowMissing(ALL), [])[0] is JwtStatus.OK
    assert _run(AllowMissing(ALL), list(bad))[0] is JwtStatus.VERIFICATION_FAIL
    assert _run(AllowMissingOrFailed(ALL), list(bad))[0] is JwtStatus.OK
    assert _run(_a(), [])[0] is JwtStatus.MISSED
    both = RequiresAll((_a(), _b()))
    assert _run(both, [(b"authorization", b"Bearer " + _tok().encode())])[0] is JwtStatus.MISSED


def test_a_remote_provider_without_keys_pauses_for_the_fetch() -> None:
    remote = RemoteJwks("http://keys/jwks", "keys", timeout=1, cache_duration=60)
    provider = JwtProvider("r", "iss-a", A, remote=remote)
    cache = JwksCache(remote)
    bearer = (b"authorization", b"Bearer " + _tok().encode())
    ctx = VerifyContext([bearer], b"/", NOW, 0.0, lambda _: None, {"r": cache})
    run = verify(RequiresProvider(provider, Extractor([A])), ctx)
    assert next(run) == "r"  # the filter fetches now
    cache.fetched(jwks_json(KEYS["RS256"]), 0.5)
    with pytest.raises(StopIteration) as done:
        next(run)
    assert done.value.value is JwtStatus.OK
    # Fetched but unusable: the request fails without waiting again.
    cache = JwksCache(remote)
    ctx = VerifyContext([bearer], b"/", NOW, 0.0, lambda _: None, {"r": cache})
    run = verify(RequiresProvider(provider, Extractor([A])), ctx)
    assert next(run) == "r"
    cache.failed("503", 0.5)
    with pytest.raises(StopIteration) as done:
        next(run)
    assert done.value.value is JwtStatus.JWKS_FETCH_FAIL


def test_query_edits_as_envoy_writes_them() -> None:
    assert edit_query(b"/p?b=2&a=1&c", to_remove=("x",)) == b"/p?a=1&b=2&c="
    assert edit_query(b"/p?a=%2F+x&t=1", to_remove=("t",)) == b"/p?a=/+x"
    assert edit_query(b"/p?a=%20", to_set=(("k", "v"),)) == b"/p?a=%20&k=v"
    assert edit_query(b"/p?t=1", to_remove=("t",)) == b"/p"


def _verify_at(
    now: float, token: str, memo: TokenMemo, keys: str | None = None
) -> tuple[JwtStatus, VerifyContext]:
    jwks = parse_jwks(keys) if keys is not None else PA.local_jwks
    caches = {"a": JwksCache(local=jwks)}
    bearer = (b"authorization", f"Bearer {token}".encode())
    ctx = VerifyContext([bearer], b"/", now, 0.0, {"iss-a": PA}.get, caches, memo)
    run = verify(_a(), ctx)
    with pytest.raises(StopIteration) as done:
        next(run)
    return done.value.value, ctx


def test_a_remembered_token_is_still_checked_against_the_clock_and_the_keys() -> None:
    """The memo spares decoding and the signature, never a verdict: the same token expires,
    fails against other keys, and a tampered copy fails, as checked afresh."""
    memo = TokenMemo()
    token = _tok(exp=NOW + 60)
    for _ in range(2):
        status, ctx = _verify_at(NOW, token, memo)
        assert status is JwtStatus.OK
        assert ctx.extracted is not None and ctx.extracted["payload"]["sub"] == "alice"
    assert _verify_at(NOW + 61 + 60, token, memo)[0] is JwtStatus.EXPIRED
    other = jwks_json(replace(KEYS["RS256"], private=make_keys()["RS256"].private))
    assert _verify_at(NOW, token, memo, other)[0] is JwtStatus.VERIFICATION_FAIL
    assert _verify_at(NOW, token, memo)[0] is JwtStatus.OK
    assert _verify_at(NOW, tamper(token), memo)[0] is JwtStatus.VERIFICATION_FAIL
    assert _verify_at(NOW, "a.b", memo)[0] is JwtStatus.BAD_FORMAT


def test_the_memo_is_bounded() -> None:
    memo = TokenMemo(limit=4)
    tokens = [_tok(jti=str(i)) for i in range(10)]
    for token in tokens:
        assert _verify_at(NOW, token, memo)[0] is JwtStatus.OK
    assert len(memo) <= 4
    assert _verify_at(NOW, tokens[0], memo)[0] is JwtStatus.OK
