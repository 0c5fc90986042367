"""The JWKS of one ``jwt_authn`` provider: inline keys, or keys fetched from ``remote_jwks``
through a cluster and cached for ``cache_duration``, on an injected clock.

The cache only decides; the filter does the fetch. ``state(now)`` says whether the keys are
usable and whether a fetch is due; the filter reports back with ``fetched`` or ``failed``.
A fetch that fails (endpoint down, bad status, a body that does not parse) keeps the keys
already cached, counts the failure and is retried after ``retry_after`` (Envoy's
``async_fetch`` behaviour); only a provider that never had keys fails its requests with
"Jwks remote fetch is failed".
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.security.jwt import Jwks, JwksError, parse_jwks

__all__ = ["JwksCache", "JwksState", "RemoteJwks"]

#: Envoy's default ``cache_duration`` (10 minutes) and ``failed_refetch_duration`` (1 s).
DEFAULT_CACHE_DURATION = 600.0
DEFAULT_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class RemoteJwks:
    uri: str
    cluster: str
    timeout: float
    cache_duration: float = DEFAULT_CACHE_DURATION
    retry_after: float = DEFAULT_RETRY_AFTER


@dataclass(frozen=True, slots=True)
class JwksState:
    """``keys`` to verify with (None: none yet); ``fetch``: start a fetch now."""

    keys: Jwks | None
    fetch: bool


class JwksCache:
    """Mutable by design: one per provider per proxy, shared by the requests it serves."""

    __slots__ = (
        "_due",
        "_fetching",
        "_keys",
        "failures",
        "fetches",
        "last_error",
        "remote",
    )

    def __init__(self, remote: RemoteJwks | None = None, local: Jwks | None = None) -> None:
        self.remote = remote
        self._keys = local
        self._due = 0.0 if remote is not None else float("inf")
        self._fetching = False
        self.fetches = 0
        self.failures = 0
        self.last_error = ""

    def state(self, now: float) -> JwksState:
        fetch = self.remote is not None and not self._fetching and now >= self._due
        if fetch:
            self._fetching = True
        return JwksState(self._keys, fetch)

    @property
    def fetching(self) -> bool:
        return self._fetching

    @property
    def keys(self) -> Jwks | None:
        return self._keys

    def fetched(self, body: bytes | str, now: float) -> JwksError | None:
        """A fetch answered 200 with ``body``; returns the parse error when it is unusable
        (then counted as a failure)."""
        assert self.remote is not None
        self._fetching = False
        try:
            keys = parse_jwks(body)
        except JwksError as e:
            self._fail(str(e), now)
            return e
        self._keys = keys
        self.fetches += 1
        self._due = now + self.remote.cache_duration
        return None

    def failed(self, reason: str, now: float) -> None:
        """A fetch did not answer, or answered a status other than 200."""
        self._fetching = False
        self._fail(reason, now)

    def _fail(self, reason: str, now: float) -> None:
        assert self.remote is not None
        self.failures += 1
        self.last_error = reason
        self._due = now + self.remote.retry_after
