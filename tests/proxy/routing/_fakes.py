"""Test doubles shared by the routing tests."""

from __future__ import annotations


class FakeHost:
    """Satisfies ``proxy.routing.lb.LbHost``; identity-hashed like the runtime's Host."""

    __slots__ = ("active_requests", "address", "healthy", "hostname", "port", "weight")

    def __init__(self, address: str, port: int = 80, weight: int = 1, healthy: bool = True):
        self.address = address
        self.port = port
        self.weight = weight
        self.healthy = healthy
        self.active_requests = 0
        self.hostname = ""

    def __repr__(self) -> str:
        return f"FakeHost({self.address}:{self.port})"


def hosts(n: int, **kw: object) -> list[FakeHost]:
    return [FakeHost(f"10.0.0.{i + 1}", **kw) for i in range(n)]  # type: ignore[arg-type]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
