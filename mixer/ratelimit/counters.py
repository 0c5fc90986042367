"""Fixed-window counters: in this process's memory, or in Redis shared by every replica.

Both take a batch of :class:`~mixer.ratelimit.decide.Hit` and return each counter's value
after adding its hits. A counter's key names its window (see ``decide``), so a window ends
when its key expires: after ``ttl`` seconds (Redis ``EXPIRE``), or when the memory store's
clock passes it.

Redis: ``INCRBY key hits`` + ``EXPIRE key ttl`` per hit (the reference service's
fixed-window cache), pipelined. The calls that arrive in one turn of the event loop share one
pipeline, so a burst of N concurrent decisions costs one round trip, not N, and a burst larger
than the connection pool waits for a connection instead of failing ("Too many connections"
would turn into UNAVAILABLE, and the caller's filter would then let the request through
unlimited). Every call is bounded by ``timeout``; a refused connection, a reset, a timeout or
a Redis error is one :class:`CounterError`, and the service turns it into a gRPC error so the
caller's ``failure_mode_deny`` decides.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Sequence
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions

from mixer.ratelimit.decide import Hit

__all__ = ["CounterError", "Counters", "MemoryCounters", "RedisCounters"]


class CounterError(Exception):
    """The counter store could not answer (Redis down, slow or erroring)."""


class Counters(Protocol):
    async def increment(self, hits: Sequence[Hit]) -> list[int]: ...
    async def close(self) -> None: ...


class MemoryCounters:
    """Counters in a dict; ``clock`` is Unix time in seconds (injected for tests).

    Expired windows are dropped in expiry order from a heap, a few per call, so memory
    follows the live windows and no call pays for a full sweep."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._values: dict[str, tuple[int, float]] = {}
        self._expiry: list[tuple[float, str]] = []

    def increment_now(self, hits: Sequence[Hit]) -> list[int]:
        """The synchronous core of :meth:`increment` (no I/O)."""
        now = self._clock()
        self._expire(now)
        values = self._values
        out: list[int] = []
        for hit in hits:
            current = values.get(hit.key)
            if current is None or current[1] <= now:
                expires = now + hit.ttl
                values[hit.key] = (hit.hits, expires)
                heapq.heappush(self._expiry, (expires, hit.key))
                out.append(hit.hits)
            else:
                value = current[0] + hit.hits
                values[hit.key] = (value, current[1])
                out.append(value)
        return out

    async def increment(self, hits: Sequence[Hit]) -> list[int]:
        return self.increment_now(hits)

    def __len__(self) -> int:
        return len(self._values)

    def _expire(self, now: float) -> None:
        heap = self._expiry
        values = self._values
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            current = values.get(key)
            if current is not None and current[1] == expires:
                del values[key]

    async def close(self) -> None:
        self._values.clear()
        self._expiry.clear()


class RedisCounters:
    """Counters in Redis (``redis://host:port/db``), shared by every mixer replica."""

    def __init__(self, url: str, *, timeout: float = 1.0, pool_size: int = 16) -> None:
        self.url = url
        self.timeout = timeout
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            # waiting for a free connection counts against the same bound as the call
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            # A dead Redis must fail fast: the filter's own timeout and failure mode decide.
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
        )
        self._client = aioredis.Redis(connection_pool=pool)
        # The hits of the calls waiting for this loop turn's pipeline, and their futures.
        self._pending: list[tuple[Sequence[Hit], asyncio.Future[list[int]]]] = []
        # The event loop keeps only weak references to tasks.
        self._running: set[asyncio.Task[None]] = set()

    async def increment(self, hits: Sequence[Hit]) -> list[int]:
        if not hits:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((hits, future))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError as exc:
            raise CounterError(f"redis {self.url}: no answer within {self.timeout}s") from exc

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Sequence[Hit], asyncio.Future[list[int]]]]) -> None:
        try:
            replies = await asyncio.wait_for(self._pipeline(batch), self.timeout)
        except TimeoutError:
            error: CounterError = CounterError(
                f"redis {self.url}: no answer within {self.timeout}s"
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            error = CounterError(f"redis {self.url}: {exc}")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        else:
            start = 0
            for hits, future in batch:
                if not future.done():
                    future.set_result(replies[start : start + len(hits)])
                start += len(hits)
            return
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    async def _pipeline(
        self, batch: list[tuple[Sequence[Hit], asyncio.Future[list[int]]]]
    ) -> list[int]:
        pipe = self._client.pipeline(transaction=False)
        for hits, _ in batch:
            for hit in hits:
                pipe.incrby(hit.key, hit.hits)
                pipe.expire(hit.key, hit.ttl)
        replies = await pipe.execute()
        return [int(value) for value in replies[0::2]]

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._client.ping(), self.timeout)
        except TimeoutError as exc:
            raise CounterError(f"redis {self.url}: no answer within {self.timeout}s") from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise CounterError(f"redis {self.url}: {exc}") from exc

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        await self._client.aclose()
        await self._client.connection_pool.disconnect()
