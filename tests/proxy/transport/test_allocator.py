"""The allocator tuning is accepted by glibc (its effect on streamed bodies is measured by
``benchmarks.proxy``'s throughput scenario: docs/proxy/performance.md)."""

from __future__ import annotations

from proxy.transport.allocator import tune_allocator


def test_tuning_is_accepted_by_glibc() -> None:
    assert tune_allocator() is True
