"""JWT verification with Envoy's ``jwt_authn`` semantics (its ``jwt_verify_lib`` statuses and
their order), signatures checked by PyJWT.

Order of checks, as Envoy's authenticator runs them: parse (three base64url JSON sections),
issuer, time (``nbf`` / ``exp`` with clock skew, against an injected clock), audiences, then
the signature against the provider's JWKS (keys whose ``kid`` / ``alg`` fit the token, RS256 /
RS384 / RS512, PS256 / PS384 / PS512, ES256 / ES384 / ES512). The status text is the body of
Envoy's 401 / 403.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from jwt.exceptions import PyJWKError, PyJWTError

__all__ = [
    "CLOCK_SKEW",
    "Jwk",
    "Jwks",
    "JwksError",
    "Jwt",
    "JwtStatus",
    "TokenMemo",
    "audiences_allowed",
    "check_time",
    "parse_jwks",
    "parse_jwt",
    "verify_signature",
]

#: jwt_verify_lib's default clock skew, in seconds.
CLOCK_SKEW = 60
_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_KTY = {"R": "RSA", "P": "RSA", "E": "EC"}


class JwtStatus(enum.Enum):
    """``google::jwt_verify::Status`` values pymesh reports, with Envoy's messages."""

    OK = "OK"
    MISSED = "Jwt is missing"
    NOT_YET_VALID = "Jwt not yet valid"
    EXPIRED = "Jwt is expired"
    BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    HEADER_BAD_BASE64 = "Jwt header is an invalid Base64url encoded"
    HEADER_BAD_JSON = "Jwt header is an invalid JSON"
    HEADER_BAD_ALG = "Jwt header [alg] field is required and must be a string"
    HEADER_UNSUPPORTED_ALG = "Jwt header [alg] is not supported"
    HEADER_BAD_KID = "Jwt header [kid] field is not a string"
    PAYLOAD_BAD_BASE64 = "Jwt payload is an invalid Base64url encoded"
    PAYLOAD_BAD_JSON = "Jwt payload is an invalid JSON"
    PAYLOAD_ISS_NOT_STRING = "Jwt payload [iss] field is not a string"
    PAYLOAD_SUB_NOT_STRING = "Jwt payload [sub] field is not a string"
    PAYLOAD_IAT_NOT_INTEGER = "Jwt payload [iat] field is not an integer"
    PAYLOAD_NBF_NOT_INTEGER = "Jwt payload [nbf] field is not an integer"
    PAYLOAD_EXP_NOT_INTEGER = "Jwt payload [exp] field is not an integer"
    PAYLOAD_JTI_NOT_STRING = "Jwt payload [jti] field is not a string"
    PAYLOAD_AUD_NOT_STRING = "Jwt payload [aud] field is not a string or string list"
    SIGNATURE_BAD_BASE64 = "Jwt signature is an invalid Base64url encoded"
    UNKNOWN_ISSUER = "Jwt issuer is not configured"
    AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
    VERIFICATION_FAIL = "Jwt verification fails"
    MULTIPLE_TOKENS = "Found multiple Jwt tokens"
    JWKS_KID_ALG_MISMATCH = "Jwks doesn't have key to match kid or alg from Jwt"
    JWKS_NO_VALID_KEYS = "Jwks doesn't have any valid public key"
    JWKS_FETCH_FAIL = "Jwks remote fetch is failed"

    @property
    def message(self) -> str:
        return self.value


_WHITESPACE = str.maketrans("", "", " \t\n\r\v\f")


def _b64decode(text: str) -> bytes:
    """base64url as jwt_verify_lib reads it (absl's ``WebSafeBase64Unescape``): whitespace is
    skipped, trailing padding is optional, anything else outside the alphabet is an error."""
    text = text.translate(_WHITESPACE)
    bare = text.rstrip("=")
    if not bare or "=" in bare or len(text) - len(bare) > 2:
        raise ValueError("not base64url")
    return base64.b64decode(bare + "=" * (-len(bare) % 4), altchars=b"-_", validate=True)


@dataclass(frozen=True, slots=True)
class Jwt:
    """A parsed (not yet verified) token."""

    token: str
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    header_b64: str
    payload_b64: str
    signature_b64: str
    alg: str
    kid: str | None
    iss: str
    sub: str
    audiences: tuple[str, ...]
    nbf: int
    exp: int


def _int_claim(payload: Mapping[str, Any], name: str) -> int | None:
    value = payload.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def parse_jwt(token: str) -> Jwt | JwtStatus:
    """The token, or the status saying why it is malformed."""
    # jwt_verify_lib splits on dots skipping empty sections: "a.b." has two.
    parts = [part for part in token.split(".") if part]
    if len(parts) != 3:
        return JwtStatus.BAD_FORMAT
    head_b64, payload_b64, signature_b64 = parts
    try:
        header_raw = _b64decode(head_b64)
    except (ValueError, binascii.Error):
        return JwtStatus.HEADER_BAD_BASE64
    try:
        header = json.loads(header_raw)
        if not isinstance(header, dict):
            raise ValueError
    except ValueError:
        return JwtStatus.HEADER_BAD_JSON
    alg = header.get("alg")
    if not isinstance(alg, str):
        return JwtStatus.HEADER_BAD_ALG
    if alg not in _ALGORITHMS:
        return JwtStatus.HEADER_UNSUPPORTED_ALG
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        return JwtStatus.HEADER_BAD_KID
    try:
        payload_raw = _b64decode(payload_b64)
    except (ValueError, binascii.Error):
        return JwtStatus.PAYLOAD_BAD_BASE64
    try:
        payload = json.loads(payload_raw)
        if not isinstance(payload, dict):
            raise ValueError
    except ValueError:
        return JwtStatus.PAYLOAD_BAD_JSON
    for name, status in (
        ("iss", JwtStatus.PAYLOAD_ISS_NOT_STRING),
        ("sub", JwtStatus.PAYLOAD_SUB_NOT_STRING),
        ("jti", JwtStatus.PAYLOAD_JTI_NOT_STRING),
    ):
        if name in payload and not isinstance(payload[name], str):
            return status
    numbers = {}
    for name, status in (
        ("iat", JwtStatus.PAYLOAD_IAT_NOT_INTEGER),
        ("nbf", JwtStatus.PAYLOAD_NBF_NOT_INTEGER),
        ("exp", JwtStatus.PAYLOAD_EXP_NOT_INTEGER),
    ):
        value = _int_claim(payload, name)
        if value is None:
            return status
        numbers[name] = value
    aud = payload.get("aud", [])
    audiences = (aud,) if isinstance(aud, str) else aud
    if not isinstance(audiences, list | tuple) or not all(isinstance(a, str) for a in audiences):
        return JwtStatus.PAYLOAD_AUD_NOT_STRING
    try:
        _b64decode(signature_b64)
    except (ValueError, binascii.Error):
        return JwtStatus.SIGNATURE_BAD_BASE64
    return Jwt(
        token=token,
        header=header,
        payload=payload,
        header_b64=head_b64,
        payload_b64=payload_b64,
        signature_b64=signature_b64,
        alg=alg,
        kid=kid,
        iss=payload.get("iss", ""),
        sub=payload.get("sub", ""),
        audiences=tuple(audiences),
        nbf=numbers["nbf"],
        exp=numbers["exp"],
    )


def check_time(token: Jwt, now: float, clock_skew: int = CLOCK_SKEW) -> JwtStatus:
    seconds = int(now)
    if seconds + clock_skew < token.nbf:
        return JwtStatus.NOT_YET_VALID
    if token.exp and seconds > token.exp + clock_skew:
        return JwtStatus.EXPIRED
    return JwtStatus.OK


def audiences_allowed(allowed: Sequence[str], audiences: Sequence[str]) -> bool:
    """No configured audiences allows any; otherwise one must be shared. Envoy compares
    them without an ``http(s)://`` scheme and a trailing ``/``."""
    if not allowed:
        return True
    wanted = {_normalize_audience(a) for a in allowed}
    return any(_normalize_audience(a) in wanted for a in audiences)


def _normalize_audience(audience: str) -> str:
    for scheme in ("http://", "https://"):
        if audience.startswith(scheme):
            audience = audience[len(scheme) :]
    return audience.removesuffix("/")


@dataclass(frozen=True, slots=True)
class Jwk:
    kid: str | None
    alg: str | None
    kty: str
    key: Any  # the PyJWK's public key object

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Key objects do not pickle (configs cross from the loader process as pickles): send
        # the public key as DER and load it again on the other side.
        der = self.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return _jwk_from_der, (self.kid, self.alg, self.kty, der)


def _jwk_from_der(kid: str | None, alg: str | None, kty: str, der: bytes) -> Jwk:
    return Jwk(kid, alg, kty, load_der_public_key(der))


@dataclass(frozen=True, slots=True)
class Jwks:
    keys: tuple[Jwk, ...]


class JwksError(ValueError):
    """A JWKS document that does not parse or holds no usable public key."""


def parse_jwks(text: str | bytes) -> Jwks:
    """The usable keys of a JWKS document (RSA and EC public keys)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise JwksError(f"JWKS is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError('JWKS must be a JSON object with a "keys" list')
    keys = []
    for index, item in enumerate(data["keys"]):
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC"):
            continue  # jwt_verify_lib skips keys of types it does not verify with
        try:
            parsed = pyjwt.PyJWK(item)
        except (PyJWKError, PyJWTError, ValueError, TypeError) as e:
            raise JwksError(f"JWKS key {index}: {e}") from None
        keys.append(Jwk(item.get("kid"), item.get("alg"), item["kty"], parsed.key))
    if not keys:
        raise JwksError("JWKS has no valid RSA or EC public key")
    return Jwks(tuple(keys))


# Stateless verifiers, one per algorithm jwt_authn accepts.
_VERIFIERS = {name: pyjwt.get_algorithm_by_name(name) for name in _ALGORITHMS}


def verify_signature(token: Jwt, jwks: Jwks) -> JwtStatus:
    """The token's signature against the keys that fit its ``kid`` and ``alg``."""
    kty = _KTY[token.alg[0]]
    verifier = _VERIFIERS[token.alg]
    signature = _b64decode(token.signature_b64)
    message = f"{token.header_b64}.{token.payload_b64}".encode()
    tried = False
    for key in jwks.keys:
        if token.kid is not None and key.kid is not None and key.kid != token.kid:
            continue
        if key.kty != kty or (key.alg is not None and key.alg != token.alg):
            continue
        tried = True
        try:
            if verifier.verify(message, key.key, signature):
                return JwtStatus.OK
        except (PyJWTError, ValueError, TypeError):
            continue
    return JwtStatus.VERIFICATION_FAIL if tried else JwtStatus.JWKS_KID_ALG_MISMATCH


class TokenMemo:
    """The pure parts of a token's check, remembered: how it parses, and its signature's
    verdict against one key set. A client sends the same token with every request, and
    decoding and an RSA or EC verification are most of what a check costs; the checks
    that depend on the request or the clock (issuer, ``exp`` / ``nbf``, audiences) still run
    every time, in Envoy's order. Verdicts and stats are exactly those of checking anew (this
    is not Envoy's opt-in ``jwt_cache_config``, which pymesh does not take). New keys (a JWKS
    refresh) are a new ``Jwks``, so verdicts against the old ones are not reused. Bounded:
    once ``limit`` tokens are held it starts over, so a stream of distinct tokens costs what
    no memo costs.
    """

    __slots__ = ("_limit", "_parsed", "_signatures")

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._parsed: dict[str, Jwt | JwtStatus] = {}
        self._signatures: dict[str, tuple[Jwks, JwtStatus]] = {}

    def __len__(self) -> int:
        return max(len(self._parsed), len(self._signatures))

    def parse(self, token: str) -> Jwt | JwtStatus:
        parsed = self._parsed.get(token)
        if parsed is None:
            if len(self._parsed) >= self._limit:
                self._parsed.clear()
            parsed = self._parsed[token] = parse_jwt(token)
        return parsed

    def verify_signature(self, token: Jwt, jwks: Jwks) -> JwtStatus:
        seen = self._signatures.get(token.token)
        if seen is not None and seen[0] is jwks:
            return seen[1]
        status = verify_signature(token, jwks)
        if len(self._signatures) >= self._limit:
            self._signatures.clear()
        self._signatures[token.token] = (jwks, status)
        return status
