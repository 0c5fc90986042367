"""xDS type URLs, the order pushes go out in, and turning generated messages into a response.

Each generated resource is serialised once (deterministically, so equal content gives equal
bytes); the same bytes feed the per-proxy content hash that decides whether a push is needed
and the ``Any`` inside the ``DiscoveryResponse``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "PUSH_ORDER",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "Encoded",
    "encode_resources",
    "placeholder",
    "resource_name",
    "response",
]

_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

#: Envoy's order: clusters before their endpoints, listeners before their routes, so that a
#: proxy never routes to a cluster it does not have yet (xDS "eventual consistency" rules).
PUSH_ORDER: tuple[str, ...] = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)


def resource_name(message: Message) -> str:
    """The name a proxy subscribes to: ``cluster_name`` for load assignments, else ``name``."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return str(message.cluster_name)
    return str(getattr(message, "name", ""))


def placeholder(type_url: str, name: str) -> Message | None:
    """An empty resource for a name a proxy asked for but pilot has nothing under.

    Sending it (Istio does the same) ends the proxy's wait at once: a cluster with no
    endpoints or a route table with no hosts, instead of a warming timeout.
    """
    if type_url == ENDPOINT_TYPE:
        return endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if type_url == ROUTE_TYPE:
        return route_pb2.RouteConfiguration(name=name)
    return None


@dataclass(frozen=True, slots=True)
class Encoded:
    """Resources ready to send: packed, named, and hashed as a whole and one by one (the
    per-resource versions of delta xDS)."""

    resources: tuple[any_pb2.Any, ...]
    names: tuple[str, ...]
    messages: tuple[Message, ...]
    digest: bytes
    versions: tuple[str, ...] = ()


def encode_resources(
    type_url: str,
    messages: Sequence[Message],
    *,
    names: Iterable[str] | None = None,
) -> Encoded:
    """Keep the messages named in ``names`` (all when None), add placeholders for the
    missing ones, and serialise each once."""
    kept: list[Message]
    if names is None:
        kept = list(messages)
    else:
        wanted = set(names)
        kept = [m for m in messages if resource_name(m) in wanted]
        missing = wanted.difference(resource_name(m) for m in kept)
        for name in sorted(missing):
            filler = placeholder(type_url, name)
            if filler is not None:
                kept.append(filler)
    digest = hashlib.blake2b(digest_size=16)
    packed: list[any_pb2.Any] = []
    versions: list[str] = []
    for m in kept:
        body = m.SerializeToString(deterministic=True)
        url = _PREFIX + m.DESCRIPTOR.full_name
        digest.update(len(body).to_bytes(8, "big"))
        digest.update(url.encode())
        digest.update(body)
        packed.append(any_pb2.Any(type_url=url, value=body))
        versions.append(hashlib.blake2b(body, digest_size=8).hexdigest())
    return Encoded(
        tuple(packed),
        tuple(resource_name(m) for m in kept),
        tuple(kept),
        digest.digest(),
        tuple(versions),
    )


def response(
    type_url: str, encoded: Encoded, *, version: str, nonce: str, identifier: str
) -> discovery_pb2.DiscoveryResponse:
    reply = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    reply.resources.extend(encoded.resources)
    reply.control_plane.identifier = identifier
    return reply
