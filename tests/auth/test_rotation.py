"""Rotation: half life with jitter, renewal over mTLS, a CA outage survived with the current
certificate and reported, recovery when the CA is back."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

from auth.rotation import Backoff, WorkloadIdentity, rotation_time
from auth.workload import WorkloadCertificate
from pymesh.identity import SpiffeId
from tests.auth.conftest import RunningCa, start_ca

SLEEP = SpiffeId("cluster.local", "foo", "sleep")


def _cert(not_before: float, not_after: float) -> WorkloadCertificate:
    return WorkloadCertificate(SLEEP, ("x",), b"k", "r", 1, not_before, not_after)


def test_rotation_time_is_half_life_with_one_percent_jitter() -> None:
    cert = _cert(1000.0, 1000.0 + 86400)
    rng = random.Random(7)
    times = [rotation_time(cert, rng) for _ in range(500)]
    assert all(1000 + 86400 * 0.49 <= t <= 1000 + 86400 * 0.51 for t in times)
    assert max(times) - min(times) > 86400 * 0.015  # really jittered


async def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _identity(ca: RunningCa, ttl: float) -> WorkloadIdentity:
    token = ca.issuer.issue("foo", "sleep")
    return WorkloadIdentity(
        ca.client(), SLEEP, lambda: token, clock=time.time, ttl=ttl,
        backoff=Backoff(random.Random(1), base=0.1, cap=0.4),
    )  # fmt: skip


async def test_rotates_at_half_life_and_survives_an_outage(tmp_path) -> None:
    ca = await start_ca(tmp_path / "ca")
    seen: list[WorkloadCertificate] = []
    identity = _identity(ca, ttl=3)
    try:
        identity.start()
        first = await identity.wait_ready(10)
        assert identity.state().ready and identity.state().serial == format(first.serial, "x")
        identity.subscribe(seen.append)
        await _wait(lambda: identity.rotations >= 2, 20)
        # Each renewal came at about half of the previous certificate's life.
        for before, after in itertools.pairwise(seen):
            elapsed = after.not_before - before.not_before
            assert 0.3 * 3 <= elapsed <= 0.75 * 3.3, elapsed
        await ca.server.stop()
        kept = identity.current
        await _wait(lambda: identity.failures >= 2, 20)
        state = identity.state()
        assert "UNAVAILABLE" in state.last_error
        assert identity.current is not None and identity.current.serial == kept.serial
        await ca.server.start(ca.address)
        await _wait(lambda: identity.current.serial != kept.serial, 20)
        assert identity.state().last_error == ""
    finally:
        await identity.stop()
        await ca.server.stop()


async def test_renews_by_certificate_not_token(ca: RunningCa) -> None:
    calls: list[str] = []
    token = ca.issuer.issue("foo", "sleep")

    def read_token() -> str:
        calls.append("token")
        return token

    identity = WorkloadIdentity(ca.client(), SLEEP, read_token, clock=time.time, ttl=600)
    await identity.renew()
    await identity.renew()
    assert calls == ["token"]  # the second one proved itself with its certificate
