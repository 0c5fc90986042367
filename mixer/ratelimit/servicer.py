"""``envoy.service.ratelimit.v3.RateLimitService``: protos in, protos out, served by grpc.aio
(mixer's port) or by the lean unary server (:class:`RateLimitHandler`, the standalone
service).

Errors are gRPC errors, as the reference service answers them, so the caller's filter counts
``ratelimit.error`` and its ``failure_mode_deny`` decides: a bad request is
``INVALID_ARGUMENT``, a failed counter store ``UNAVAILABLE``.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.message import DecodeError

from mixer.grpc_unary import GrpcAbort
from mixer.ratelimit.config import Unit
from mixer.ratelimit.counters import CounterError
from mixer.ratelimit.decide import Decision, Descriptor, Request, RequestError
from mixer.ratelimit.service import RateLimitService
from proxy.routing.grpc import GrpcStatus

__all__ = [
    "SHOULD_RATE_LIMIT",
    "RateLimitHandler",
    "RateLimitServicer",
    "add_to_server",
    "decide",
    "request_from_proto",
    "response_to_proto",
]

SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
_Request = rls_pb2.RateLimitRequest
_Response = rls_pb2.RateLimitResponse
_CODES = {code.value[0]: code for code in grpc.StatusCode}


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


async def decide(service: RateLimitService, request: Any) -> Any:
    """One ``ShouldRateLimit`` call; a refusal is a :class:`GrpcAbort`."""
    try:
        decision = await service.should_rate_limit(request_from_proto(request))
    except RequestError as exc:
        raise GrpcAbort(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
    except CounterError as exc:
        raise GrpcAbort(GrpcStatus.UNAVAILABLE, str(exc)) from None
    except ValueError as exc:  # an enum value this version does not know
        raise GrpcAbort(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
    return response_to_proto(decision)


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, service: RateLimitService) -> None:
        self.service = service

    async def ShouldRateLimit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await decide(self.service, request)
        except GrpcAbort as exc:
            await context.abort(_CODES[exc.status], exc.message)


class RateLimitHandler:
    """``ShouldRateLimit`` as a :data:`mixer.grpc_unary.Handler`: serialized bytes both ways."""

    def __init__(self, service: RateLimitService) -> None:
        self.service = service

    async def __call__(self, data: bytes) -> bytes:
        try:
            request = _Request.FromString(data)
        except DecodeError as exc:
            raise GrpcAbort(GrpcStatus.INTERNAL, f"cannot parse the request: {exc}") from None
        response = await decide(self.service, request)
        return bytes(response.SerializeToString())


def add_to_server(server: grpc.aio.Server, service: RateLimitService) -> None:
    """Register the Rate Limit Service on a grpc.aio server (mixer's, or a standalone one)."""
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(service), server)
