"""Signing keys and tokens for JWT tests: RSA, EC and PSS keys made per run, their JWKS, and
tokens with any claims (valid, expired, not yet valid, other issuer or audience, tampered)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["SigningKey", "jwks_json", "make_keys", "tamper"]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = pyjwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, alg=self.alg)
        return jwk

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return pyjwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header}
        )


def make_keys() -> dict[str, SigningKey]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "RS256": SigningKey("rsa", "RS256", rsa_key),
        "PS256": SigningKey(
            "pss", "PS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "ES256": SigningKey("ec", "ES256", ec.generate_private_key(ec.SECP256R1())),
    }


def jwks_json(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.public_jwk() for k in keys]})


def tamper(token: str) -> str:
    """The same header and payload with another (valid base64url) signature."""
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"
