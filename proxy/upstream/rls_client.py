"""A client of the Rate Limit Service (``envoy.service.ratelimit.v3``) for the proxy's filter.

Calls go over gRPC (:mod:`proxy.upstream.h2_unary`, the proxy's own HTTP/2 codec) to a host
the proxy's cluster picks, one connection per host address, kept while the host is. A call
never outlives its ``timeout`` and is cancelled with its stream. The answer is handed to a
callback as an :class:`~proxy.routing.ratelimit_answer.RlsAnswer`; every failure (no host,
deadline, a gRPC error, a malformed answer) is an ``ERROR`` answer naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from proxy.routing.ratelimit_answer import LimitStatus, RlsAnswer, RlsStatus
from proxy.upstream.h2_unary import H2Unary, H2UnaryCall

__all__ = ["RlsCall", "RlsClient"]

_Descriptor = tuple[tuple[str, str], ...]
_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
_METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


RlsCall = H2UnaryCall
"""One call in flight; ``cancel()`` drops its answer."""


class RlsClient:
    """``pick`` returns the ``host:port`` to call (the cluster's load balancer), or None."""

    def __init__(self, pick: Callable[[], str | None], *, authority: str = "") -> None:
        self._pick = pick
        self._unary = H2Unary(
            _METHOD,
            rls_pb2.RateLimitRequest.SerializeToString,
            rls_pb2.RateLimitResponse.FromString,
            authority=authority,
        )

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
        request = rls_pb2.RateLimitRequest(
            domain=domain,
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in d]
                )
                for d in descriptors
            ],
        )

        def answered(response: Any, error: str | None) -> None:
            if error is not None:
                done(RlsAnswer(LimitStatus.ERROR, error=error))
            else:
                done(answer_from_proto(response))

        return self._unary.call(target, request, timeout, answered)

    async def close(self) -> None:
        await self._unary.close()


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
