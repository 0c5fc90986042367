"""Envoy's Secret Discovery Service (``envoy.service.secret.v3``) for one workload identity,
as Istio's agent serves it on a Unix socket: secret ``default`` is the workload certificate
and key, ``ROOTCA`` the mesh root to validate peers with.

State of the world per stream: a request naming secrets gets them as soon as the identity
has a certificate; every rotation pushes the new ``default`` to each stream that asked for
it; an ACK (same names, our nonce) gets nothing; a NACK is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from auth.rotation import WorkloadIdentity
from auth.workload import WorkloadCertificate
from pymesh.errors import ConfigError

__all__ = ["ROOT_CA", "SECRET_TYPE", "WORKLOAD_CERT", "SdsServer", "secrets_for"]

log = structlog.get_logger(__name__)

#: ``sizeof(sockaddr_un.sun_path)`` on Linux, less the terminating NUL.
_SUN_PATH_MAX = 107
WORKLOAD_CERT = "default"
ROOT_CA = "ROOTCA"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def secrets_for(cert: WorkloadCertificate, names: Iterable[str]) -> list[secret_pb2.Secret]:
    """The secrets of ``names`` this identity can serve (others are skipped)."""
    found = []
    for name in names:
        if name == WORKLOAD_CERT:
            found.append(
                secret_pb2.Secret(
                    name=name,
                    tls_certificate=common_pb2.TlsCertificate(
                        certificate_chain=base_pb2.DataSource(
                            inline_bytes=cert.chain_pem.encode("ascii")
                        ),
                        private_key=base_pb2.DataSource(inline_bytes=cert.key),
                    ),
                )
            )
        elif name == ROOT_CA:
            found.append(
                secret_pb2.Secret(
                    name=name,
                    validation_context=common_pb2.CertificateValidationContext(
                        trusted_ca=base_pb2.DataSource(inline_bytes=cert.root.encode("ascii"))
                    ),
                )
            )
    return found


class _Stream:
    __slots__ = ("names", "nonce", "wake")

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()
        self.nonce = ""
        self.wake = asyncio.Event()


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    """The SDS endpoint of one :class:`WorkloadIdentity`."""

    def __init__(self, identity: WorkloadIdentity) -> None:
        self.identity = identity
        self._streams: set[_Stream] = set()
        self._nonces = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.nacks = 0
        identity.subscribe(self._rotated)

    def _rotated(self, _: WorkloadCertificate) -> None:
        for stream in self._streams:
            if WORKLOAD_CERT in stream.names or ROOT_CA in stream.names:
                stream.wake.set()

    def _response(self, names: frozenset[str]) -> discovery_pb2.DiscoveryResponse | None:
        cert = self.identity.current
        if cert is None:
            return None
        resources = []
        for secret in secrets_for(cert, sorted(names)):
            packed = any_pb2.Any()
            packed.Pack(secret)
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=format(cert.serial, "x"),
            resources=resources,
            type_url=SECRET_TYPE,
            nonce=str(next(self._nonces)),
        )

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream()
        self._streams.add(stream)
        reader = asyncio.get_running_loop().create_task(self._read(stream, request_iterator))
        try:
            while not reader.done() or stream.wake.is_set():
                waiter = asyncio.ensure_future(stream.wake.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not stream.wake.is_set():
                    continue
                stream.wake.clear()
                response = self._response(stream.names)
                if response is not None and stream.names:
                    stream.nonce = response.nonce
                    yield response
        finally:
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(
        self, stream: _Stream, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]
    ) -> None:
        async for request in requests:
            names = frozenset(request.resource_names)
            if request.HasField("error_detail"):
                self.nacks += 1
                log.warning(
                    "sds rejected",
                    names=sorted(names),
                    version=request.version_info,
                    error=request.error_detail.message,
                )
                continue
            unknown = sorted(names - {WORKLOAD_CERT, ROOT_CA})
            if unknown:
                log.warning("sds: unknown secrets requested", names=unknown)
            if names != stream.names or not request.response_nonce:
                stream.names = names
                stream.wake.set()

    async def FetchSecrets(
        self, request: discovery_pb2.DiscoveryRequest, context: Any
    ) -> discovery_pb2.DiscoveryResponse:
        response = self._response(frozenset(request.resource_names))
        if response is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no certificate yet")
        assert response is not None
        return response

    # -- the socket --------------------------------------------------------------------------
    async def start(self, socket_path: Path) -> None:
        if len(os.fsencode(socket_path)) > _SUN_PATH_MAX:
            raise ConfigError(
                f"SDS socket path {socket_path} is longer than a Unix socket path may be "
                f"({_SUN_PATH_MAX} bytes); choose a shorter --sds-socket"
            )
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # a stale socket of an earlier run
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, server)
        try:
            server.add_insecure_port(f"unix:{socket_path}")
        except RuntimeError as exc:
            raise ConfigError(f"SDS socket {socket_path}: {exc}") from None
        await server.start()
        # The socket hands out the workload's private key: its owner only.
        os.chmod(socket_path, 0o600)
        self._server = server
        log.info("sds serving", socket=str(socket_path))

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None
