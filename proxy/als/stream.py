"""One ``StreamAccessLogs`` stream (``envoy.service.accesslog.v3``) of the proxy's own, over
its HTTP/2 codec (:mod:`proxy.als.h2_call`).

Entries are batched: a batch is sent when it reaches ``buffer_size_bytes`` or
``buffer_flush_interval`` after its first entry (Envoy's rules). Logging never waits and
never fails a request: batches wait in a bounded outbox while the stream is being opened or
is slow, and a batch that does not fit is dropped and counted
(``access_logs.grpc_access_log.logs_dropped``), as is every entry of a batch the service
cannot be reached for. A failed stream is opened again after a jittered exponential
back-off; each new stream names the proxy first (the node and log name), as Envoy's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from proxy.als.h2_call import H2StreamCall
from proxy.stats import StatsStore
from pymesh.backoff import Backoff

__all__ = ["AlsStream", "StreamSettings"]

log = structlog.get_logger(__name__)

_METHOD = b"/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
# StreamAccessLogsMessage field numbers: a batch is encoded by hand around entries that are
# serialized once, so the wire bytes are the same as building the whole message.
_HTTP_LOGS = 2
_TCP_LOGS = 3
_LOG_ENTRY = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How one logger's stream batches and reconnects; sizes in bytes, times in seconds."""

    buffer_size_bytes: int = 16384
    buffer_flush_interval: float = 1.0
    max_pending_bytes: int = 1 << 20
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    drain_timeout: float = 1.0
    connect_timeout: float = 5.0
    #: written bytes the service may hold back before the proxy stops writing
    max_backlog_bytes: int = 256 << 10


class AlsStream:
    """Batches of one kind of entry (HTTP or TCP) to the service ``pick`` chooses a host of."""

    def __init__(
        self,
        *,
        identifier: bytes,
        pick: Callable[[], str | None],
        tcp: bool,
        loop: asyncio.AbstractEventLoop,
        stats: StatsStore,
        settings: StreamSettings,
        rng: random.Random,
        authority: str = "",
    ) -> None:
        self._identifier = identifier  # a serialized StreamAccessLogsMessage with only it set
        self._pick = pick
        self._kind = _TCP_LOGS if tcp else _HTTP_LOGS
        self._loop = loop
        self._settings = settings
        self._authority = authority
        self._backoff = Backoff(rng, base=settings.backoff_base, cap=settings.backoff_max)
        self._written = stats.counter("access_logs.grpc_access_log.logs_written")
        self._dropped = stats.counter("access_logs.grpc_access_log.logs_dropped")
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        # (encoded batch, entries in it)
        self._outbox: deque[tuple[bytes, int]] = deque()
        self._outbox_bytes = 0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()  # the outbox is empty (what close() waits for)
        self._empty.set()
        self._writer: asyncio.Task[None] | None = None
        self._call: H2StreamCall | None = None
        self._fresh = True  # the current call has not named the proxy yet
        self._closing = False

    # -- the request path: never waits ---------------------------------------------------------
    def log(self, entry: bytes) -> None:
        """Queue one serialized entry (``HTTPAccessLogEntry`` / ``TCPAccessLogEntry``)."""
        if self._closing:
            self._dropped.value += 1
            return
        self._batch.append(entry)
        self._batch_bytes += len(entry)
        if self._batch_bytes >= self._settings.buffer_size_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._settings.buffer_flush_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._batch_bytes = 0
        encoded = _field(self._kind, b"".join(_field(_LOG_ENTRY, e) for e in batch))
        if self._outbox_bytes + len(encoded) > self._settings.max_pending_bytes:
            self._dropped.value += len(batch)
            return
        self._outbox.append((encoded, len(batch)))
        self._outbox_bytes += len(encoded)
        self._empty.clear()
        self._wake.set()
        if self._writer is None:
            self._writer = self._loop.create_task(self._write_forever())

    # -- the stream ----------------------------------------------------------------------------
    async def _connect(self) -> bool:
        """Open a new stream to a host of the service; False (and the reason logged) when
        that fails."""
        target = self._pick()
        if target is None:
            # No host to send to: what waits is dropped rather than kept for a service that
            # may never be configured.
            log.debug("access log service has no host")
            self._drop_outbox()
            return False
        host, _, port = target.rpartition(":")
        call = H2StreamCall(
            _METHOD,
            (self._authority or target).encode(),
            on_end=lambda why: self._ended(call, why),
            on_writable=self._wake.set,
        )
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: call, host.strip("[]"), int(port)),
                self._settings.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.info("access log stream failed", target=target, error=str(exc) or repr(exc))
            self._trim()
            return False
        self._call = call
        self._fresh = True
        return True

    def _ended(self, call: H2StreamCall, why: str) -> None:
        if call is self._call:
            self._call = None
            if not self._closing:
                log.info("access log stream ended", error=why)
                if self._outbox:
                    self._wake.set()

    def _trim(self) -> None:
        """A long outage keeps only the newest half of the budget."""
        half = self._settings.max_pending_bytes // 2
        while self._outbox and self._outbox_bytes > half:
            old, dropped = self._outbox.popleft()
            self._outbox_bytes -= len(old)
            self._dropped.value += dropped

    def _drop_outbox(self) -> None:
        while self._outbox:
            _, count = self._outbox.popleft()
            self._dropped.value += count
        self._outbox_bytes = 0
        self._empty.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                call = self._call
                if call is None or not call.open:
                    if not await self._connect():
                        if self._closing:
                            self._drop_outbox()
                            return
                        await asyncio.sleep(self._backoff.next())
                    continue
                if call.backlog > self._settings.max_backlog_bytes:
                    break  # a slow service: wait until it takes what it has (on_writable)
                data, count = self._outbox.popleft()
                self._outbox_bytes -= len(data)
                call.write(self._identifier + data if self._fresh else data)
                self._fresh = False
                self._written.value += count
                self._backoff.reset()
            if not self._outbox:
                self._empty.set()

    async def close(self) -> None:
        """Send what is buffered (for at most ``drain_timeout``), then end the stream."""
        self.flush()
        self._closing = True
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), self._settings.drain_timeout)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._drop_outbox()
        call, self._call = self._call, None
        if call is not None:
            call.close()
