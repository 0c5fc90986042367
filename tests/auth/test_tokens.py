"""Service-account tokens: what the CA accepts and every reason it refuses one."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from auth.tokens import TokenIssuer
from pymesh.errors import AuthenticationError

NOW = 1_800_000_000.0


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(ec.generate_private_key(ec.SECP256R1()), lambda: NOW)


def test_round_trip(issuer: TokenIssuer) -> None:
    account = issuer.verifier().verify(issuer.issue("foo", "sleep"))
    assert (account.namespace, account.name) == ("foo", "sleep")
    claims = jwt.decode(issuer.issue("foo", "sleep"), options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:foo:sleep"
    assert claims["aud"] == ["istio-ca"]
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "sleep"


def test_refusals(issuer: TokenIssuer) -> None:
    verifier = issuer.verifier()
    other = TokenIssuer(ec.generate_private_key(ec.SECP256R1()), lambda: NOW)
    later = TokenIssuer(issuer._key, lambda: NOW - 7200)
    cases = {
        "signature does not verify": other.issue("foo", "sleep"),
        "not for audience istio-ca": issuer.issue("foo", "sleep", audiences=["api"]),
        "has expired": later.issue("foo", "sleep", ttl=3600),
        "invalid service account token": "not.a.jwt",
    }
    for message, token in cases.items():
        with pytest.raises(AuthenticationError, match=message):
            verifier.verify(token)
    forged = jwt.encode(
        {"iss": issuer.issuer, "sub": "admin", "aud": ["istio-ca"], "exp": NOW + 60},
        issuer._key,
        algorithm="ES256",
    )
    with pytest.raises(AuthenticationError, match="is not a service account"):
        verifier.verify(forged)
    none_alg = jwt.encode(
        {"iss": issuer.issuer, "sub": "system:serviceaccount:a:b", "aud": ["istio-ca"],
         "exp": NOW + 60},
        None, algorithm="none",
    )  # fmt: skip
    with pytest.raises(AuthenticationError):
        verifier.verify(none_alg)
