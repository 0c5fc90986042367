"""JWT verification with Envoy's statuses, on Istio's sample token and JWKS and on tokens
signed here (RS256, PS256, ES256); and the JWKS cache's fetch, expiry and failure counting."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from proxy.security.jwks import JwksCache, RemoteJwks
from proxy.security.jwt import (
    JwksError,
    Jwt,
    JwtStatus,
    audiences_allowed,
    check_time,
    parse_jwks,
    parse_jwt,
    verify_signature,
)
from tests.proxy.security.tokens import jwks_json, make_keys, tamper

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "istio-samples" / "jwt"
NOW = 1_800_000_000
KEYS = make_keys()
JWKS = parse_jwks(jwks_json(*KEYS.values()))


def _claims(**extra: object) -> dict[str, object]:
    return {"iss": "issuer@example.com", "sub": "me", "exp": NOW + 3600, **extra}


def _parsed(token: str) -> Jwt:
    result = parse_jwt(token)
    assert isinstance(result, Jwt), result
    return result


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_signed_tokens_verify(alg: str) -> None:
    token = _parsed(KEYS[alg].sign(_claims(aud=["a", "b"])))
    assert token.iss == "issuer@example.com" and token.audiences == ("a", "b")
    assert check_time(token, NOW) is JwtStatus.OK
    assert verify_signature(token, JWKS) is JwtStatus.OK
    assert verify_signature(_parsed(tamper(token.token)), JWKS) is JwtStatus.VERIFICATION_FAIL


def test_kid_and_alg_must_fit_a_key() -> None:
    token = _parsed(KEYS["RS256"].sign(_claims(), kid="other"))
    assert verify_signature(token, JWKS) is JwtStatus.JWKS_KID_ALG_MISMATCH
    # Signed by the PSS key but naming the RSA key: that key is tried and fails.
    forged = _parsed(KEYS["RS256"].sign(_claims(), kid="pss"))
    assert verify_signature(forged, JWKS) is JwtStatus.JWKS_KID_ALG_MISMATCH


def test_istio_sample_token() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    jwks = parse_jwks((SAMPLES / "jwks.json").read_text())
    for name in ("demo.jwt", "groups-scope.jwt"):
        token = _parsed((SAMPLES / name).read_text().strip())
        assert token.iss == "testing@secure.istio.io" == token.sub
        assert check_time(token, NOW) is JwtStatus.OK
        assert verify_signature(token, jwks) is JwtStatus.OK
    groups = _parsed((SAMPLES / "groups-scope.jwt").read_text().strip())
    assert groups.payload["groups"] == ["group1", "group2"]


@pytest.mark.parametrize(
    ("claims", "now", "status"),
    [
        ({"exp": NOW - 61}, NOW, JwtStatus.EXPIRED),
        ({"exp": NOW - 60}, NOW, JwtStatus.OK),  # within the 60 s clock skew
        ({"nbf": NOW + 61}, NOW, JwtStatus.NOT_YET_VALID),
        ({"nbf": NOW + 60}, NOW, JwtStatus.OK),
        ({"exp": 0}, NOW, JwtStatus.OK),  # no expiry
    ],
)
def test_time_constraints(claims: dict[str, int], now: int, status: JwtStatus) -> None:
    token = _parsed(KEYS["ES256"].sign({**_claims(), **claims}))
    assert check_time(token, now) is status


def _b64(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ("abc", JwtStatus.BAD_FORMAT),
        ("a.b.c.d", JwtStatus.BAD_FORMAT),
        ("!!." + _b64({}) + ".c2ln", JwtStatus.HEADER_BAD_BASE64),
        (_b64(b"[") + "." + _b64({}) + ".c2ln", JwtStatus.HEADER_BAD_JSON),
        (_b64({"typ": "JWT"}) + "." + _b64({}) + ".c2ln", JwtStatus.HEADER_BAD_ALG),
        (_b64({"alg": "none"}) + "." + _b64({}) + ".c2ln", JwtStatus.HEADER_UNSUPPORTED_ALG),
        (_b64({"alg": "HS256"}) + "." + _b64({}) + ".c2ln", JwtStatus.HEADER_UNSUPPORTED_ALG),
        (_b64({"alg": "RS256"}) + ".!!.c2ln", JwtStatus.PAYLOAD_BAD_BASE64),
        (_b64({"alg": "RS256"}) + "." + _b64({"exp": "soon"}) + ".c2ln",
         JwtStatus.PAYLOAD_EXP_NOT_INTEGER),
        (_b64({"alg": "RS256"}) + "." + _b64({"aud": 3}) + ".c2ln",
         JwtStatus.PAYLOAD_AUD_NOT_STRING),
        (_b64({"alg": "RS256"}) + "." + _b64({}) + ".!!", JwtStatus.SIGNATURE_BAD_BASE64),
    ],
)  # fmt: skip
def test_malformed_tokens(token: str, status: JwtStatus) -> None:
    assert parse_jwt(token) is status


def test_audiences() -> None:
    assert audiences_allowed((), ("anything",))
    assert audiences_allowed(("https://api.example.com/",), ("api.example.com",))
    assert not audiences_allowed(("a",), ())
    assert not audiences_allowed(("a",), ("b", "c"))


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"keys": {}}', '{"keys": []}', '{"keys": [{"kty": "oct", "k": "AA"}]}',
     '{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}'],
)  # fmt: skip
def test_bad_jwks_is_refused(text: str) -> None:
    with pytest.raises(JwksError):
        parse_jwks(text)


def test_jwks_cache_fetches_caches_and_keeps_keys_when_the_endpoint_is_down() -> None:
    remote = RemoteJwks("http://jwks/keys", "outbound|80||jwks", timeout=1, cache_duration=300)
    cache = JwksCache(remote)
    first = cache.state(0)
    assert first.keys is None and first.fetch
    assert not cache.state(0).fetch  # one fetch at a time
    assert cache.fetched(jwks_json(KEYS["RS256"]), 0) is None
    assert cache.state(10) == cache.state(10) and not cache.state(10).fetch
    assert cache.state(299).keys is not None and not cache.state(299).fetch
    refresh = cache.state(300)
    assert refresh.fetch and refresh.keys is not None  # still usable while refreshing
    cache.failed("connection refused", 300)
    assert cache.failures == 1 and cache.last_error == "connection refused"
    assert cache.state(300.5).keys is not None and not cache.state(300.5).fetch
    assert cache.state(301).fetch  # retried after retry_after
    assert isinstance(cache.fetched(b"<html>", 301), JwksError)
    assert cache.failures == 2 and cache.state(301.5).keys is not None
    assert cache.fetches == 1


def test_inline_jwks_never_fetches() -> None:
    cache = JwksCache(local=JWKS)
    state = cache.state(1e12)
    assert state.keys is JWKS and not state.fetch
