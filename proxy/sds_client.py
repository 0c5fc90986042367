"""SDS from an identity agent (``envoy.service.secret.v3``), as Envoy asks Istio's
pilot-agent on its Unix socket: one ``StreamSecrets`` stream per config-source cluster,
state of the world, the names the configuration references.

Each accepted response replaces the secrets it carries and is ACKed; a secret that does not
translate is NACKed with the reason and the previous one kept. While the agent is unreachable
the proxy keeps what it has and reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

from proxy.config.model import Bootstrap, Cluster, Listener, Secret
from proxy.config.snapshot import SECRET_TYPE
from proxy.config.translate import translate_secret
from proxy.config.translate.clusters import PIPE_PREFIX
from proxy.stats import StatsStore
from pymesh.backoff import Backoff, sleep_before_retry
from pymesh.errors import ConfigError

__all__ = ["AgentSds", "SdsStream", "agent_secret_names", "grpc_target"]

log = structlog.get_logger(__name__)

_INVALID_ARGUMENT = 3

#: Receives the stream's whole accepted state after every change.
OnSecrets = Callable[[Mapping[str, Secret]], Awaitable[None]]


class SdsStream:
    def __init__(
        self,
        cluster: str,
        target: str,
        node: base_pb2.Node,
        on_secrets: OnSecrets,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.cluster = cluster
        self.target = target  # a gRPC target: ``unix:/path`` for the agent's socket
        self.node = node
        self.on_secrets = on_secrets
        self.backoff = Backoff(rng or random.Random())
        self.names: frozenset[str] = frozenset()
        self.secrets: dict[str, Secret] = {}
        self.version = ""
        self.updates = 0
        self.rejects = 0
        self._nonce = ""
        self._outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sds-{self.cluster}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, names: frozenset[str]) -> None:
        """Ask for exactly ``names`` (a new request only when they changed)."""
        if names == self.names:
            return
        self.names = names
        self.secrets = {n: s for n, s in self.secrets.items() if n in names}
        self._send()

    # -- the stream --------------------------------------------------------------------------
    async def _run(self) -> None:
        lost = False
        while True:
            try:
                async for _ in self._stream():
                    if lost:
                        log.info("sds stream re-established", cluster=self.cluster)
                        lost = False
                    self.backoff.reset()
                reason = "the agent closed the SDS stream"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            delay = self.backoff.next()
            (log.debug if lost else log.warning)(
                "sds stream lost; reconnecting; certificates in use are kept",
                cluster=self.cluster,
                target=self.target,
                error=reason,
                in_seconds=round(delay, 2),
            )
            lost = True
            await sleep_before_retry(delay)

    async def _stream(self) -> AsyncIterator[None]:
        self._outbox = asyncio.Queue()
        self._nonce = ""
        async with grpc.aio.insecure_channel(self.target) as channel:
            call = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets(self._requests())
            if self.names:
                self._send()
            async for reply in call:
                await self._on_response(reply)
                yield None

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    def _send(self, error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=SECRET_TYPE,
            version_info=self.version,
            response_nonce=self._nonce,
            resource_names=sorted(self.names),
        )
        request.node.CopyFrom(self.node)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
        self._outbox.put_nowait(request)

    async def _on_response(self, reply: discovery_pb2.DiscoveryResponse) -> None:
        self._nonce = reply.nonce
        try:
            received = self._translate(reply)
        except ConfigError as exc:
            self.rejects += 1
            log.warning("sds rejected", cluster=self.cluster, error=str(exc))
            self._send(error=str(exc))
            return
        previous = dict(self.secrets)
        self.secrets.update(received)
        log.info("sds secrets received", cluster=self.cluster, names=sorted(received))
        try:
            await self.on_secrets(MappingProxyType(dict(self.secrets)))
        except ConfigError as exc:
            # The configuration could not use them: keep serving with the previous ones.
            self.secrets = previous
            self.rejects += 1
            log.warning("sds secrets not applied", cluster=self.cluster, error=str(exc))
            self._send(error=str(exc))
            return
        self.version = reply.version_info
        self.updates += 1
        self._send()  # ACK

    def _translate(self, reply: discovery_pb2.DiscoveryResponse) -> dict[str, Secret]:
        found: dict[str, Secret] = {}
        for packed in reply.resources:
            if packed.type_url != SECRET_TYPE:
                raise ConfigError(f"an SDS response carries a {packed.type_url}")
            message = secret_pb2.Secret.FromString(packed.value)
            if message.name not in self.names:
                continue
            try:
                found[message.name] = translate_secret(message)
            except ConfigError as exc:
                raise ConfigError(f"{message.name}: {exc}") from None
        return found


def agent_secret_names(
    listeners: Iterable[Listener], clusters: Iterable[Cluster]
) -> dict[str, frozenset[str]]:
    """The secrets asked of a gRPC config source (the identity agent), by its cluster."""
    found: dict[str, set[str]] = {}
    sockets: list[Any] = []
    for c in clusters:
        sockets.append(c.transport_socket)
        sockets.extend(m.transport_socket for m in c.transport_socket_matches)
    for lst in listeners:
        sockets.extend(
            chain.transport_socket
            for chain in (*lst.filter_chains, lst.default_filter_chain)
            if chain is not None
        )
    for tls in sockets:
        if tls is None:
            continue
        for ref in (*tls.common.tls_certificate_sds, tls.common.validation_context_sds):
            source = ref.config_source if ref is not None else None
            if ref is not None and source is not None and source.api_cluster is not None:
                found.setdefault(source.api_cluster, set()).add(ref.name)
    return {cluster: frozenset(names) for cluster, names in found.items()}


def grpc_target(bootstrap: Bootstrap, cluster_name: str) -> str:
    """The gRPC target of a static cluster's first endpoint (``unix:<path>`` for a pipe)."""
    cluster = next((c for c in bootstrap.static_resources.clusters if c.name == cluster_name), None)
    assignment = cluster.load_assignment if cluster is not None else None
    if assignment is None or not assignment.endpoints:
        raise ConfigError(f"SDS config source cluster '{cluster_name}' is not a static cluster")
    endpoint = assignment.endpoints[0]
    if endpoint.address.startswith(PIPE_PREFIX):
        return endpoint.address
    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    return f"{host}:{endpoint.port}"


class AgentSds:
    """The proxy's SDS streams to gRPC config sources (the identity agent): one per cluster,
    asking for the names the configuration uses; ``on_change`` applies what arrived."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        node: base_pb2.Node,
        on_change: Callable[[], Awaitable[None]],
        stats: StatsStore,
    ) -> None:
        self._bootstrap = bootstrap
        self._node = node
        self._on_change = on_change
        self._stats = stats
        self._streams: dict[str, SdsStream] = {}
        self._received: dict[str, Mapping[str, Secret]] = {}

    def subscribe(self, wanted: Mapping[str, frozenset[str]]) -> None:
        for cluster, names in wanted.items():
            stream = self._streams.get(cluster)
            if stream is None:
                target = grpc_target(self._bootstrap, cluster)
                stream = SdsStream(cluster, target, self._node, self._receiver(cluster))
                self._streams[cluster] = stream
                stream.start()
            stream.subscribe(names)
        for cluster, stream in self._streams.items():
            if cluster not in wanted:
                stream.subscribe(frozenset())

    def has(self, wanted: Mapping[str, frozenset[str]]) -> bool:
        """Whether every wanted secret has arrived."""
        return all(names <= set(self._received.get(c, ())) for c, names in wanted.items())

    def secrets(self) -> dict[str, Secret]:
        return {name: s for got in self._received.values() for name, s in got.items()}

    async def stop(self) -> None:
        for stream in self._streams.values():
            await stream.stop()

    def _receiver(self, cluster: str) -> OnSecrets:
        async def receive(secrets: Mapping[str, Secret]) -> None:
            previous = self._received.get(cluster)
            self._received[cluster] = secrets
            try:
                await self._on_change()
            except ConfigError:
                if previous is None:
                    self._received.pop(cluster, None)
                else:
                    self._received[cluster] = previous
                raise
            for name, secret in secrets.items():
                if previous is None or previous.get(name) != secret:
                    # Envoy's count of a secret's accepted versions.
                    self._stats.counter(f"sds.{name}.update_success").value += 1

        return receive
