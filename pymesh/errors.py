"""The pymesh exception tree.

* PymeshError                       -- base of everything pymesh raises on purpose
  x ConfigError                     -- configuration that cannot be accepted
    + ValidationError               -- an invalid value; carries source, document index, path
    + UnsupportedError              -- valid for Envoy/Istio but not implemented by pymesh; names it
  x ProtocolError                   -- a peer or the local side broke a wire protocol
    + LocalProtocolError            -- we were asked to send something the protocol forbids
    + RemoteProtocolError           -- the peer sent something the protocol forbids
  x UpstreamError                   -- talking to an upstream failed
    + ConnectError                  -- connect refused / timed out
    + UpstreamResetError            -- the connection died before the response was complete
  x ControlPlaneError               -- pilot / CA / mixer interaction failed
  x IdentityError                   -- a certificate request refused by the CA (its verdict)
    + AuthenticationError           -- the caller did not prove who it is (UNAUTHENTICATED)
    + PermissionDeniedError         -- the caller asked for an identity not its own
    + InvalidRequestError           -- a malformed CSR, a SAN that is not a SPIFFE ID, a bad TTL
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "ControlPlaneError",
    "IdentityError",
    "InvalidRequestError",
    "LocalProtocolError",
    "PermissionDeniedError",
    "ProtocolError",
    "PymeshError",
    "RemoteProtocolError",
    "UnsupportedError",
    "UpstreamError",
    "UpstreamResetError",
    "ValidationError",
]


class PymeshError(Exception):
    """Base class for every error pymesh raises deliberately."""


class ConfigError(PymeshError):
    """Configuration that cannot be accepted."""


class ValidationError(ConfigError):
    """An invalid configuration value.

    ``source`` is the file (or "<stdin>", "<xds>"), ``document`` the index of the YAML
    document inside it, ``path`` the dotted field path (``spec.http[0].route[1].weight``).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        document: int | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.document = document
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source)
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.path:
            where.append(self.path)
        return f"{': '.join(where)}: {self.message}" if where else self.message


class UnsupportedError(ValidationError):
    """Something Envoy or Istio accepts that pymesh does not implement (never silently ignored)."""


class ProtocolError(PymeshError):
    """A wire protocol was violated. ``status`` is the HTTP status to answer with, if any."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(ProtocolError):
    """We were asked to emit something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class UpstreamError(PymeshError):
    """Talking to an upstream host failed."""


class ConnectError(UpstreamError):
    """Connecting to an upstream failed (refused, unreachable or timed out)."""


class UpstreamResetError(UpstreamError):
    """The upstream connection ended before the response was complete."""


class ControlPlaneError(PymeshError):
    """A control-plane interaction (xDS, CA, telemetry) failed."""


class IdentityError(PymeshError):
    """The CA refused a certificate request; the message says why (never a key or token)."""


class AuthenticationError(IdentityError):
    """No valid credential: a missing, expired or forged token, or no client certificate."""


class PermissionDeniedError(IdentityError):
    """An authenticated caller asked for an identity that is not its own."""


class InvalidRequestError(IdentityError):
    """The request itself is wrong: a malformed CSR, a SAN that is not a SPIFFE ID, a bad TTL."""
