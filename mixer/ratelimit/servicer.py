"""``envoy.service.ratelimit.v3.RateLimitService`` over grpc.aio: protos in, protos out.

Errors are gRPC errors, as the reference service answers them, so the caller's filter counts
``ratelimit.error`` and its ``failure_mode_deny`` decides: a bad request is
``INVALID_ARGUMENT``, a failed counter store ``UNAVAILABLE``.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from mixer.ratelimit.config import Unit
from mixer.ratelimit.counters import CounterError
from mixer.ratelimit.decide import Decision, Descriptor, Request, RequestError
from mixer.ratelimit.service import RateLimitService

__all__ = ["RateLimitServicer", "add_to_server", "request_from_proto", "response_to_proto"]

_Response = rls_pb2.RateLimitResponse


def request_from_proto(message: Any) -> Request:
    descriptors = []
    for descriptor in message.descriptors:
        limit = None
        if descriptor.HasField("limit"):
            limit = (descriptor.limit.requests_per_unit, Unit(descriptor.limit.unit))
        hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else None
        descriptors.append(
            Descriptor(tuple((entry.key, entry.value) for entry in descriptor.entries), limit, hits)
        )
    return Request(message.domain, tuple(descriptors), message.hits_addend)


def response_to_proto(decision: Decision) -> Any:
    response = _Response(overall_code=int(decision.code))
    for status in decision.statuses:
        item = response.statuses.add(code=int(status.code), limit_remaining=status.remaining)
        if status.limit is not None:
            item.current_limit.requests_per_unit = status.limit.requests_per_unit
            item.current_limit.unit = int(status.limit.unit)
            if status.limit.name:
                item.current_limit.name = status.limit.name
        if status.reset is not None:
            item.duration_until_reset.seconds = status.reset
    for key, value in decision.response_headers:
        response.response_headers_to_add.append(base_pb2.HeaderValue(key=key, value=value))
    return response


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, service: RateLimitService) -> None:
        self.service = service

    async def ShouldRateLimit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            decision = await self.service.should_rate_limit(request_from_proto(request))
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CounterError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except ValueError as exc:  # an enum value this version does not know
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return response_to_proto(decision)


def add_to_server(server: grpc.aio.Server, service: RateLimitService) -> None:
    """Register the Rate Limit Service on a grpc.aio server (mixer's, or a standalone one)."""
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(service), server)
