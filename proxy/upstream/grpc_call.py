"""Unary gRPC calls of the proxy's own (an external authorizer's ``Check``, a rate limit
service's ``ShouldRateLimit``), to a host a
cluster picks: grpcio's asyncio channel, one per host address, kept for the life of the
filter config that made it. A call never outlives its timeout and is cancelled with the
stream that made it; its outcome (the response, or why there is none) goes to a callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["GrpcCall", "GrpcUnary"]

Done = Callable[[Any, str | None], None]
"""``done(response, error)``: exactly one of them is None."""


class GrpcCall:
    """One call in flight; :meth:`cancel` drops its outcome."""

    __slots__ = ("_call", "_done", "_future")

    def __init__(self, call: Any, done: Done) -> None:
        self._call = call
        self._done: Done | None = done
        # grpc.aio hands the response only to an awaiter: one future per call, which exists
        # only where such a filter is configured.
        self._future = asyncio.ensure_future(call)
        self._future.add_done_callback(self._finished)

    def cancel(self) -> None:
        self._done = None
        self._call.cancel()

    def _finished(self, future: asyncio.Future[Any]) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        try:
            response = future.result()
        except grpc.aio.AioRpcError as exc:
            done(None, f"{exc.code().name}: {exc.details()}")
            return
        except Exception as exc:  # cancelled by grpc itself, or a transport failure
            done(None, repr(exc) or type(exc).__name__)
            return
        done(response, None)


class GrpcUnary:
    """Calls of one method; ``target`` (``host:port``) is chosen per call by the caller."""

    def __init__(
        self,
        method: str,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
        *,
        authority: str = "",
    ) -> None:
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize
        self._authority = authority
        self._stubs: dict[str, Any] = {}
        self._channels: list[Any] = []

    def call(self, target: str, request: Any, timeout: float | None, done: Done) -> GrpcCall:
        stub = self._stubs.get(target)
        if stub is None:
            options = [("grpc.default_authority", self._authority)] if self._authority else []
            channel = grpc.aio.insecure_channel(target, options=options)
            self._channels.append(channel)
            stub = self._stubs[target] = channel.unary_unary(
                self._method,
                request_serializer=self._serialize,
                response_deserializer=self._deserialize,
            )
        return GrpcCall(stub(request, timeout=timeout), done)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
