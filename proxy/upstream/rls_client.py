"""A client of the Rate Limit Service (``envoy.service.ratelimit.v3``) for the proxy's filter.

Calls go over gRPC (HTTP/2, grpcio's asyncio channel) to a host the proxy's cluster picks,
one channel per host address, kept while the host is. A call never outlives its ``timeout``
and is cancelled with its stream. The answer is handed to a callback as an
:class:`~proxy.routing.ratelimit_answer.RlsAnswer`; every failure (no host, deadline, a gRPC
error, a malformed answer) is an ``ERROR`` answer naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from proxy.routing.ratelimit_answer import LimitStatus, RlsAnswer, RlsStatus

__all__ = ["RlsCall", "RlsClient"]

_Descriptor = tuple[tuple[str, str], ...]
_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


class RlsCall:
    """One call in flight; :meth:`cancel` drops its answer."""

    __slots__ = ("_call", "_done", "_future")

    def __init__(self, call: Any, done: Callable[[RlsAnswer], None]) -> None:
        self._call = call
        self._done: Callable[[RlsAnswer], None] | None = done
        # grpc.aio hands the response only to an awaiter: one future per call, which exists
        # only where a rate limit filter is configured.
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
            done(RlsAnswer(LimitStatus.ERROR, error=f"{exc.code().name}: {exc.details()}"))
            return
        except Exception as exc:  # cancelled by grpc itself, or a transport failure
            done(RlsAnswer(LimitStatus.ERROR, error=repr(exc)))
            return
        done(answer_from_proto(response))


class RlsClient:
    """``pick`` returns the ``host:port`` to call (the cluster's load balancer), or None."""

    def __init__(self, pick: Callable[[], str | None], *, authority: str = "") -> None:
        self._pick = pick
        self._authority = authority
        self._stubs: dict[str, Any] = {}
        self._channels: list[Any] = []

    def limit(
        self,
        domain: str,
        descriptors: Sequence[_Descriptor],
        timeout: float,
        done: Callable[[RlsAnswer], None],
    ) -> RlsCall | None:
        """Start a call; ``done`` runs later with the answer. None (and ``done`` already
        called) when there is no host to call."""
        target = self._pick()
        if target is None:
            done(RlsAnswer(LimitStatus.ERROR, error="no healthy host in the rate limit cluster"))
            return None
        stub = self._stubs.get(target)
        if stub is None:
            options = [("grpc.default_authority", self._authority)] if self._authority else []
            channel = grpc.aio.insecure_channel(target, options=options)
            self._channels.append(channel)
            stub = self._stubs[target] = channel.unary_unary(
                _METHOD,
                request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
                response_deserializer=rls_pb2.RateLimitResponse.FromString,
            )
        request = rls_pb2.RateLimitRequest(
            domain=domain,
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in d]
                )
                for d in descriptors
            ],
        )
        return RlsCall(stub(request, timeout=timeout), done)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()


def answer_from_proto(response: Any) -> RlsAnswer:
    if response.overall_code == _OK:
        status = LimitStatus.OK
    elif response.overall_code == _OVER:
        status = LimitStatus.OVER_LIMIT
    else:
        return RlsAnswer(LimitStatus.ERROR, error="rate limit service answered UNKNOWN")
    statuses = tuple(
        RlsStatus(
            requests_per_unit=s.current_limit.requests_per_unit
            if s.HasField("current_limit")
            else None,
            unit=s.current_limit.unit,
            name=s.current_limit.name,
            remaining=s.limit_remaining,
            reset_seconds=s.duration_until_reset.seconds,
        )
        for s in response.statuses
    )
    return RlsAnswer(
        status,
        statuses,
        tuple((h.key.lower().encode(), h.value.encode()) for h in response.response_headers_to_add),
        tuple((h.key.lower().encode(), h.value.encode()) for h in response.request_headers_to_add),
    )
