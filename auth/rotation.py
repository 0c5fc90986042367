"""Keeping a workload certificate fresh: fetch, rotate at half life, survive a CA outage.

Istio's agent: rotate when ``SECRET_GRACE_PERIOD_RATIO`` (0.5) of the lifetime is left,
that ratio jittered by ±0.01 so a fleet issued together does not renew together. A failed
renewal keeps the current certificate (it is still valid for the other half of its life)
and retries with exponential back-off; the state says so for ``/stats`` and ``/ready``.
Every rotation makes a new key in memory; the key is never written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from auth.workload import CaClient, KeyType, WorkloadCertificate, make_csr, new_key
from pymesh.backoff import Backoff, sleep_before_retry
from pymesh.errors import AuthenticationError, PymeshError
from pymesh.identity import SpiffeId

__all__ = ["Backoff", "IdentityState", "WorkloadIdentity", "rotation_time"]

log = structlog.get_logger(__name__)

GRACE_RATIO = 0.5
GRACE_JITTER = 0.01


def rotation_time(
    cert: WorkloadCertificate,
    rng: random.Random,
    ratio: float = GRACE_RATIO,
    jitter: float = GRACE_JITTER,
) -> float:
    """Wall-clock time at which to renew: when ``ratio`` (± ``jitter``) of life is left."""
    grace = ratio + rng.uniform(-jitter, jitter)
    return cert.not_after - cert.lifetime * grace


@dataclass(frozen=True, slots=True)
class IdentityState:
    """What ``/stats`` and ``/ready`` report about the identity."""

    ready: bool
    rotations: int
    failures: int
    last_error: str
    expires_at: float
    serial: str


Listener = Callable[[WorkloadCertificate], None]


class WorkloadIdentity:
    """The current certificate of one identity, renewed in the background.

    ``token`` returns the service-account token (read fresh each time: projected tokens
    are rotated on disk). ``clock`` is wall-clock seconds (certificate times).
    """

    def __init__(
        self,
        client: CaClient,
        identity: SpiffeId,
        token: Callable[[], str | None],
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        key_type: KeyType = KeyType.EC_P256,
        ttl: float = 0.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.identity = identity
        self.token = token
        self.clock = clock
        self.rng = rng or random.Random()
        self.key_type = key_type
        self.ttl = ttl
        self.backoff = backoff or Backoff(self.rng, base=1.0, cap=60.0)
        self.current: WorkloadCertificate | None = None
        self.rotations = 0
        self.failures = 0
        self.last_error = ""
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    # -- observers ---------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """``listener(cert)`` after every new certificate (and at once if there is one)."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def state(self) -> IdentityState:
        cert = self.current
        return IdentityState(
            ready=cert is not None and cert.not_after > self.clock(),
            rotations=self.rotations,
            failures=self.failures,
            last_error=self.last_error,
            expires_at=cert.not_after if cert is not None else 0.0,
            serial=format(cert.serial, "x") if cert is not None else "",
        )

    async def wait_ready(self, timeout: float) -> WorkloadCertificate:
        await asyncio.wait_for(self._first.wait(), timeout)
        assert self.current is not None
        return self.current

    # -- one renewal -------------------------------------------------------------------------
    async def renew(self) -> WorkloadCertificate:
        """Get a new certificate now: over mTLS with the current one while it is valid, else
        (or when the CA no longer accepts it) with the token."""
        key = new_key(self.key_type)
        csr = make_csr(key, self.identity)
        current = self.current
        chain: list[str] | None = None
        if current is not None and current.not_after > self.clock():
            try:
                chain = await self.client.create_certificate(csr, self.ttl, client=current)
            except AuthenticationError as exc:
                log.info("renewal by certificate refused; using the token", reason=str(exc))
        if chain is None:
            token = self.token()
            if not token:
                raise AuthenticationError("no service account token to prove the identity with")
            chain = await self.client.create_certificate(csr, self.ttl, token=token)
        cert = WorkloadCertificate.from_response(self.identity, key, chain, self.client.root)
        self._install(cert)
        return cert

    def _install(self, cert: WorkloadCertificate) -> None:
        first = self.current is None
        self.current = cert
        if not first:
            self.rotations += 1
        self.last_error = ""
        self._first.set()
        log.info(
            "workload certificate",
            identity=self.identity.uri,
            serial=format(cert.serial, "x"),
            expires_in=round(cert.not_after - self.clock()),
            rotation=not first,
        )
        for listener in self._listeners:
            try:
                listener(cert)
            except Exception:
                log.exception("certificate listener failed")

    # -- background loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="identity")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            cert = self.current
            if cert is not None:
                delay = rotation_time(cert, self.rng) - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                await self.renew()
                self.backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                delay = self.backoff.next()
                log.warning(
                    "certificate renewal failed; keeping the current one",
                    identity=self.identity.uri,
                    error=self.last_error,
                    retry_in=round(delay, 2),
                    have_certificate=self.current is not None,
                    exc_info=not isinstance(exc, PymeshError),
                )
                await sleep_before_retry(delay)
