"""Network read filters before the TCP proxy: held bytes wait for an asynchronous check and go
on in order; a filter that closes the connection ends it with its details."""

from __future__ import annotations

from proxy.http.stream_info import ConnectionInfo
from proxy.network_filter import NetworkCallbacks, ReadFilter, ReadFilterChain, ReadFilterStatus


class _Wait(ReadFilter):
    """Holds the first bytes until the test calls ``cb.continue_reading()``."""

    def __init__(self) -> None:
        self.cb: NetworkCallbacks | None = None
        self.calls = 0

    def on_data(self, cb: NetworkCallbacks, data: bytes) -> ReadFilterStatus:
        self.calls += 1
        if self.cb is None:
            self.cb = cb
            cb.dynamic_metadata("test")["seen"] = data.decode()
            return ReadFilterStatus.STOP_ITERATION
        return ReadFilterStatus.CONTINUE


class _Close(ReadFilter):
    def on_data(self, cb: NetworkCallbacks, data: bytes) -> ReadFilterStatus:
        cb.close("refused")
        return ReadFilterStatus.STOP_ITERATION


def _chain(*filters: ReadFilter) -> tuple[ReadFilterChain, list[bytes], list[bool]]:
    delivered: list[bytes] = []
    closed: list[bool] = []
    chain = ReadFilterChain(
        [lambda f=f: f for f in filters],  # type: ignore[misc]
        ConnectionInfo(),
        delivered.append,
        lambda: closed.append(True),
    )
    return chain, delivered, closed


def test_held_bytes_go_on_in_order_after_the_check() -> None:
    wait = _Wait()
    chain, delivered, closed = _chain(wait)
    chain.on_data(b"one")
    chain.on_data(b"two")
    assert delivered == [] and wait.calls == 1
    assert chain.all_dynamic_metadata == {"test": {"seen": "one"}}
    assert wait.cb is not None
    wait.cb.continue_reading()
    chain.on_data(b"three")
    assert delivered == [b"onetwo", b"three"] and not closed


def test_a_filter_closes_the_connection() -> None:
    chain, delivered, closed = _chain(_Close(), _Wait())
    chain.on_data(b"x")
    chain.on_data(b"y")
    assert (delivered, closed, chain.termination_details) == ([], [True], "refused")
