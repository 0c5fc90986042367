"""Service-account tokens: JWTs the control plane signs per service account, shaped like
Kubernetes projected tokens, and the CA's check of them (audience ``istio-ca``).

``sub`` is ``system:serviceaccount:<namespace>:<name>`` and the ``kubernetes.io`` claim
carries the namespace and account, as in a projected token. Signed ES256 with the key in the
CA directory (``token-key.pem``, 0600): whoever holds that directory is the token issuer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from auth.pem import PrivateKey, key_pem, load_key, write_private
from pymesh.errors import AuthenticationError, ConfigError

__all__ = [
    "CA_AUDIENCE",
    "TOKEN_KEY",
    "ServiceAccount",
    "TokenIssuer",
    "TokenVerifier",
    "load_or_create_token_key",
]

CA_AUDIENCE = "istio-ca"
TOKEN_KEY = "token-key.pem"
_ALGORITHM = "ES256"
_SUB_PREFIX = "system:serviceaccount:"


def _issuer_name(domain: str) -> str:
    return f"https://kubernetes.default.svc.{domain}"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    namespace: str
    name: str


def load_or_create_token_key(directory: Path) -> PrivateKey:
    path = directory / TOKEN_KEY
    if path.exists():
        try:
            return load_key(path.read_bytes(), str(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    key = ec.generate_private_key(ec.SECP256R1())
    write_private(path, key_pem(key))
    return key


class TokenIssuer:
    """Mints tokens, as the Kubernetes API server does for ``kubectl create token``."""

    __slots__ = ("_key", "clock", "issuer")

    def __init__(
        self, key: PrivateKey, clock: Callable[[], float], domain: str = "cluster.local"
    ) -> None:
        self._key = key
        self.clock = clock
        self.issuer = _issuer_name(domain)

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: Sequence[str] = (CA_AUDIENCE,),
        ttl: float = 24 * 3600.0,
    ) -> str:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": f"{_SUB_PREFIX}{namespace}:{service_account}",
            "aud": list(audiences),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl),
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self._key.public_key(), self.clock, issuer=self.issuer)


class TokenVerifier:
    """Checks signature, issuer, audience ``istio-ca`` and time; returns the account."""

    __slots__ = ("_key", "clock", "issuer")

    def __init__(self, public_key: object, clock: Callable[[], float], *, issuer: str) -> None:
        self._key = public_key
        self.clock = clock
        self.issuer = issuer

    def verify(self, token: str) -> ServiceAccount:
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[_ALGORITHM],
                audience=CA_AUDIENCE,
                issuer=self.issuer,
                # Times are checked below against the injected clock, not pyjwt's own.
                options={
                    "require": ["exp", "iss", "sub", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise AuthenticationError(f"the token is not for audience {CA_AUDIENCE}") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token was not issued by this mesh") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("the token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid service account token: {exc}") from None
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
            raise AuthenticationError("token times (exp, nbf) must be numbers")
        if now >= exp:
            raise AuthenticationError("the service account token has expired")
        if now < nbf:
            raise AuthenticationError("the service account token is not valid yet")
        subject = str(claims.get("sub", ""))
        namespace, _, name = subject.removeprefix(_SUB_PREFIX).partition(":")
        if not subject.startswith(_SUB_PREFIX) or not namespace or not name or ":" in name:
            raise AuthenticationError(f"token subject {subject!r} is not a service account")
        return ServiceAccount(namespace, name)
