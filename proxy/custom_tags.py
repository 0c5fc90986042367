"""Custom tags of an access-log entry (``AccessLogCommon.custom_tags``) or a span, valued as
Envoy's ``CustomTag`` implementations value them. Sans-I/O.

A metadata value that is a string is logged as is, a bool as ``true``/``false``, a number as
Envoy's ``absl::StrCat`` prints a double, a list or struct as compact JSON; a missing value
logs the tag's default, and an empty result is not logged at all.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

from proxy.access_log import metadata_text
from proxy.config.model import CustomTag, CustomTagKind
from proxy.http.headers import get_header

__all__ = ["apply_custom_tags"]


def apply_custom_tags(
    target: MutableMapping[str, str],
    tags: Sequence[CustomTag],
    request_headers: list[tuple[bytes, bytes]] | None,
    cluster_metadata: Mapping[str, object] | None,
) -> None:
    """Set ``tags`` in ``target`` (an entry's ``custom_tags`` map, a span's tags)."""
    for tag in tags:
        value = _value(tag, request_headers, cluster_metadata)
        if value:
            target[tag.tag] = value


def _value(
    tag: CustomTag,
    headers: list[tuple[bytes, bytes]] | None,
    cluster_metadata: Mapping[str, object] | None,
) -> str:
    kind = tag.kind
    if kind is CustomTagKind.LITERAL:
        return tag.value
    if kind is CustomTagKind.REQUEST_HEADER:
        found = get_header(headers, tag.name) if headers is not None else None
        return found.decode("latin-1") if found is not None else tag.default_value
    if cluster_metadata is None:
        return tag.default_value
    value: object = cluster_metadata
    for key in tag.path:
        if not isinstance(value, Mapping) or key not in value:
            return tag.default_value
        value = value[key]
    return _render(value, tag.default_value)


def _render(value: object, default: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:.6g}"  # absl::StrCat of a double
    if isinstance(value, str | dict | list):
        return metadata_text(value)
    return default
