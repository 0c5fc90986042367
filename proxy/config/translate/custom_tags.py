"""``type.tracing.v3.CustomTag``: the extra values an access logger attaches to an entry and
a tracer to a span.

pymesh evaluates literal, environment, request-header and cluster-metadata tags (the cluster's
``filter_metadata``, which is how Istio's inbound clusters name the services they serve).
Request, route and host metadata tags are refused at translation rather than logged empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.config.model import CustomTag, CustomTagKind
from proxy.config.translate.common import header_name, join
from pymesh.errors import UnsupportedError

__all__ = ["custom_tags"]


def custom_tags(
    protos: Iterable[Any], path: str, environ: Mapping[str, str] | None = None
) -> tuple[CustomTag, ...]:
    env = os.environ if environ is None else environ
    return tuple(_tag(p, join(path, f"custom_tags[{i}]"), env) for i, p in enumerate(protos))


def _tag(proto: Any, path: str, env: Mapping[str, str]) -> CustomTag:
    kind = proto.WhichOneof("type")
    if kind == "literal":
        return CustomTag(proto.tag, CustomTagKind.LITERAL, value=proto.literal.value)
    if kind == "environment":
        # Envoy reads the variable once, when it loads the config.
        value = env.get(proto.environment.name, proto.environment.default_value)
        return CustomTag(proto.tag, CustomTagKind.LITERAL, value=value)
    if kind == "request_header":
        header = proto.request_header
        return CustomTag(
            proto.tag,
            CustomTagKind.REQUEST_HEADER,
            name=header_name(header.name, join(path, "request_header.name")),
            default_value=header.default_value,
        )
    assert kind == "metadata", kind  # PGV: the oneof is required
    metadata = proto.metadata
    source = metadata.kind.WhichOneof("kind")
    if source is None:
        # Envoy finds no metadata for an unset kind: the tag is always its default.
        return CustomTag(proto.tag, CustomTagKind.LITERAL, value=metadata.default_value)
    if source != "cluster":
        raise UnsupportedError(
            f"custom tag '{proto.tag}': {source} metadata is not supported by pymesh "
            "(cluster metadata is)",
            path=join(path, f"metadata.kind.{source}"),
        )
    key = metadata.metadata_key
    return CustomTag(
        proto.tag,
        CustomTagKind.CLUSTER_METADATA,
        path=(key.key, *(segment.key for segment in key.path)),
        default_value=metadata.default_value,
    )
