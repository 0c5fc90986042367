"""A scripted ADS client for tests and the pilot benchmark: send exactly the requests a test
wants (first requests, ACKs, NACKs, stale nonces) and read the responses with a timeout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import Any

# gRPC's fork handlers can crash a child forked (with a preexec_fn) while gRPC threads run;
# the tests that use this client also start processes. Only effective before gRPC's import.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

__all__ = ["AdsClient", "istio_node"]


def istio_node(
    pod: str,
    namespace: str = "default",
    ip: str = "10.0.0.1",
    *,
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    extra: Mapping[str, Any] | None = None,
) -> base_pb2.Node:
    """A Node the way Istio's sidecar injector fills it in."""
    metadata = struct_pb2.Struct()
    json_format.ParseDict(
        {
            "NAMESPACE": namespace,
            "SERVICE_ACCOUNT": service_account,
            "WORKLOAD_NAME": pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else pod,
            "INSTANCE_IPS": ip,
            "LABELS": dict(labels or {}),
            **(extra or {}),
        },
        metadata,
    )
    return base_pb2.Node(
        id=f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
        cluster=f"{pod}.{namespace}",
        metadata=metadata,
    )


class AdsClient:
    def __init__(self, target: str, node: base_pb2.Node) -> None:
        self.target = target
        self.node = node
        self.channel: grpc.aio.Channel | None = None
        self.call: Any = None
        self.sent_node = False
        self._next: asyncio.Future[Any] | None = None
        self._background: asyncio.Future[Any] | None = None

    async def __aenter__(self) -> AdsClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> AdsClient:
        self.channel = grpc.aio.insecure_channel(self.target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources()
        return self

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
        if self._next is not None:
            self._next.cancel()
        if self.call is not None:
            self.call.cancel()
        if self.channel is not None:
            await self.channel.close()

    async def send(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        if not self.sent_node:
            request.node.CopyFrom(self.node)
            self.sent_node = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(request)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        if self._next is None:
            self._next = asyncio.ensure_future(self.call.read())
        # Shielded: a timed-out wait leaves the read pending for the next call, so no
        # response is ever lost between two waits.
        reply = await asyncio.wait_for(asyncio.shield(self._next), timeout)
        self._next = None
        if reply is grpc.aio.EOF:
            raise EOFError("stream closed by pilot")
        assert isinstance(reply, discovery_pb2.DiscoveryResponse)
        return reply

    async def expect_nothing(self, wait: float = 0.3) -> None:
        try:
            reply = await self.recv(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {reply}")

    def auto_ack(self) -> None:
        """Read and ACK every response in the background (a registered pod that only has
        to stay connected)."""

        async def loop() -> None:
            while True:
                try:
                    reply = await self.recv(3600.0)
                except (EOFError, TimeoutError, grpc.aio.AioRpcError, asyncio.CancelledError):
                    return
                await self.ack(reply)

        self._background = asyncio.ensure_future(loop())

    async def ack(self, reply: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        await self.send(reply.type_url, names, version=reply.version_info, nonce=reply.nonce)

    async def nack(
        self,
        reply: discovery_pb2.DiscoveryResponse,
        message: str,
        names: Iterable[str] = (),
        version: str = "",
    ) -> None:
        await self.send(reply.type_url, names, version=version, nonce=reply.nonce, error=message)
