"""Who is asking, and may they have the identity they ask for.

Istio's two authenticators, in its order: the client certificate the caller presented over
mTLS (renewal: the identity in its current, CA-verified certificate), then a service-account
token in ``authorization: Bearer <jwt>``. An authenticated caller may only ask for its own
SPIFFE ID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from auth.tokens import TokenVerifier
from pymesh.errors import AuthenticationError, PermissionDeniedError
from pymesh.identity import SpiffeId

__all__ = ["Authenticator", "Caller", "Credential", "authorize"]

_BEARER = "bearer "


class Credential(Enum):
    CERTIFICATE = "certificate"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Caller:
    identity: SpiffeId
    credential: Credential


class Authenticator:
    __slots__ = ("trust_domain", "verifier")

    def __init__(self, verifier: TokenVerifier | None, trust_domain: str) -> None:
        self.verifier = verifier
        self.trust_domain = trust_domain

    def authenticate(
        self, metadata: Mapping[str, str], peer_uri_sans: Sequence[str] | None
    ) -> Caller:
        """``peer_uri_sans``: the URI SANs of a client certificate the TLS layer verified
        against the mesh root (None when the caller presented none)."""
        if peer_uri_sans:
            caller = self._from_certificate(peer_uri_sans)
            if caller is not None:
                return caller
        header = metadata.get("authorization", "")
        if not header:
            raise AuthenticationError(
                "no credential: present a service account token or a workload certificate"
            )
        if not header.lower().startswith(_BEARER):
            raise AuthenticationError("the authorization header is not a bearer token")
        if self.verifier is None:
            raise AuthenticationError("this CA does not accept tokens")
        account = self.verifier.verify(header[len(_BEARER) :].strip())
        try:
            identity = SpiffeId(self.trust_domain, account.namespace, account.name)
        except ValueError as exc:
            raise AuthenticationError(f"token names no valid identity: {exc}") from None
        return Caller(identity, Credential.TOKEN)

    def _from_certificate(self, sans: Sequence[str]) -> Caller | None:
        ids = []
        for san in sans:
            try:
                ids.append(SpiffeId.parse(san))
            except ValueError:
                continue
        ids = [i for i in ids if i.trust_domain == self.trust_domain]
        return Caller(ids[0], Credential.CERTIFICATE) if len(ids) == 1 else None


def authorize(caller: Caller, requested: Sequence[SpiffeId]) -> None:
    """Every identity requested must be the caller's own."""
    for identity in requested:
        if identity != caller.identity:
            raise PermissionDeniedError(
                f"{caller.identity} (by {caller.credential.value}) may not request a "
                f"certificate for {identity}"
            )
