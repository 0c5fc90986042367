"""The rate limit service's configuration: Envoy's ``ratelimit`` YAML format, validated.

One document per domain, as the ConfigMap of Istio's rate limiting task holds it::

    domain: ratelimit
    descriptors:
      - key: PATH
        value: "/productpage"
        rate_limit: {unit: minute, requests_per_unit: 1}
      - key: PATH                   # any other PATH value: a counter per value
        rate_limit: {unit: minute, requests_per_unit: 100}

A descriptor's ``key`` (with its optional ``value``) matches one entry of a request's
descriptor; nested ``descriptors`` match the entries after it. A ``value`` ending in ``*``
matches every value with that prefix. ``rate_limit`` has ``unit`` (second, minute, hour, day,
week, month, year), ``requests_per_unit``, or ``unlimited: true``; ``name`` and ``replaces``
let one matched limit switch off others in the same request. ``shadow_mode`` counts and
reports but never refuses; ``detailed_metric`` keeps a statistic per value.

The errors are the reference service's, with the file and the field path in front. Keys the
reference service knows but pymesh does not implement are refused by name, never ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "ConfigFile",
    "DescriptorNode",
    "RateLimit",
    "RateLimitConfig",
    "Unit",
    "load_config",
    "parse_documents",
]


class Unit(enum.IntEnum):
    """``RateLimitResponse.RateLimit.Unit``: the same numbers as the proto enum."""

    UNKNOWN = 0
    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    MONTH = 5
    YEAR = 6
    WEEK = 7

    @property
    def seconds(self) -> int:
        return _UNIT_SECONDS[self]


_UNIT_SECONDS = {
    Unit.UNKNOWN: 0,
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.DAY: 86400,
    Unit.WEEK: 7 * 86400,
    # The reference service's fixed windows: a month is 30 days, a year 365.
    Unit.MONTH: 30 * 86400,
    Unit.YEAR: 365 * 86400,
}

_MAX_UINT32 = 2**32 - 1

# fail(message, path, unsupported=False) -> the error to raise, with file and document filled in
_Fail = Callable[..., ValidationError]

_KNOWN_KEYS = frozenset(
    [
        "domain",
        "key",
        "value",
        "descriptors",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "unlimited",
        "shadow_mode",
        "name",
        "replaces",
        "detailed_metric",
    ]
)
# Keys of newer reference-service releases that change behaviour pymesh does not implement.
_UNSUPPORTED_KEYS = frozenset(
    ["quota_mode", "share_threshold", "metadata", "value_to_metric", "unit_multiplier"]
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One configured limit. ``stat_key`` names its statistics (``domain.KEY_value.KEY2``)."""

    requests_per_unit: int
    unit: Unit
    stat_key: str
    unlimited: bool = False
    shadow_mode: bool = False
    name: str = ""
    replaces: tuple[str, ...] = ()
    detailed_metric: bool = False


@dataclass(frozen=True, slots=True)
class DescriptorNode:
    """One level of a domain's descriptor tree. ``children`` are keyed ``key`` or
    ``key_value`` (the reference service's composite keys); ``wildcards`` hold the
    ``key_prefix*`` entries as (``key_prefix``, node), in file order."""

    limit: RateLimit | None = None
    children: Mapping[str, DescriptorNode] = field(default_factory=lambda: MappingProxyType({}))
    wildcards: tuple[tuple[str, DescriptorNode], ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A config document's text and where it came from (for error messages)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Every domain's descriptor tree; an immutable snapshot, swapped whole on reload."""

    domains: Mapping[str, DescriptorNode] = field(default_factory=lambda: MappingProxyType({}))
    sources: tuple[str, ...] = ()

    def find(self, domain: str, entries: Sequence[tuple[str, str]]) -> RateLimit | None:
        """The limit a request descriptor's ``entries`` fall under, or None (no limit).

        At each level ``key_value`` wins over a matching wildcard, which wins over ``key``
        alone; the limit applies only when it sits at the depth of the descriptor's last
        entry (a longer descriptor than the config describes is not limited).
        """
        node = self.domains.get(domain)
        if node is None:
            return None
        found: RateLimit | None = None
        last = len(entries) - 1
        for index, (key, value) in enumerate(entries):
            composite = f"{key}_{value}"
            child = node.children.get(composite)
            if child is None:
                for prefix, candidate in node.wildcards:
                    if composite.startswith(prefix):
                        child = candidate
                        break
            if child is None:
                child = node.children.get(key)
            if child is None:
                return found
            if child.limit is not None and index == last:
                found = child.limit
                if found.detailed_metric and not child.children:
                    found = _detailed(found, value)
            if not child.children and not child.wildcards:
                return found
            node = child
        return found


def _detailed(limit: RateLimit, value: str) -> RateLimit:
    return RateLimit(
        requests_per_unit=limit.requests_per_unit,
        unit=limit.unit,
        stat_key=f"{limit.stat_key}_{value}",
        unlimited=limit.unlimited,
        shadow_mode=limit.shadow_mode,
        name=limit.name,
        replaces=limit.replaces,
    )


# --- loading -------------------------------------------------------------------------------


def load_config(files: Iterable[ConfigFile]) -> RateLimitConfig:
    """Parse and check every file; raise ``ValidationError`` naming the first bad field.

    Two files for one domain are refused (the reference service's default)."""
    domains: dict[str, DescriptorNode] = {}
    sources: list[str] = []
    for config_file in files:
        for index, document in parse_documents(config_file):
            doc_source = config_file.name
            domain, node = _domain(document, doc_source, index)
            if domain in domains:
                raise ValidationError(
                    f"duplicate domain '{domain}' in config file",
                    source=doc_source,
                    document=index,
                    path="domain",
                )
            domains[domain] = node
        sources.append(config_file.name)
    return RateLimitConfig(MappingProxyType(domains), tuple(sources))


def parse_documents(config_file: ConfigFile) -> list[tuple[int | None, Mapping[str, Any]]]:
    """The rate limit documents in a file: the file itself, or, for a Kubernetes ConfigMap,
    each entry of its ``data`` (as mounted into the reference service's pod).

    The document index is None for a plain file, else the YAML document number."""
    try:
        raw = [doc for doc in yaml.safe_load_all(config_file.text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ValidationError(f"error loading config file: {exc}", source=config_file.name) from exc
    documents: list[tuple[int | None, Mapping[str, Any]]] = []
    for index, doc in enumerate(raw):
        where: int | None = index if len(raw) > 1 else None
        if not isinstance(doc, dict):
            raise ValidationError(
                "config file must be a mapping", source=config_file.name, document=where
            )
        if doc.get("kind") == "ConfigMap":
            documents.extend(_config_map_documents(doc, config_file.name, index))
        else:
            documents.append((where, doc))
    return documents


def _config_map_documents(
    doc: Mapping[str, Any], source: str, index: int
) -> list[tuple[int | None, Mapping[str, Any]]]:
    data = doc.get("data") or {}
    if not isinstance(data, dict):
        raise ValidationError("data must be a mapping", source=source, document=index, path="data")
    documents: list[tuple[int | None, Mapping[str, Any]]] = []
    for name in sorted(data):
        path = f"data[{name}]"
        try:
            inner = yaml.safe_load(str(data[name]))
        except yaml.YAMLError as exc:
            raise ValidationError(
                f"error loading config file: {exc}", source=source, document=index, path=path
            ) from exc
        if not isinstance(inner, dict):
            raise ValidationError(
                "config file must be a mapping", source=source, document=index, path=path
            )
        documents.append((index, _Scoped(inner, path)))
    return documents


class _Scoped(dict[str, Any]):
    """A ConfigMap entry's document, remembering its path inside the ConfigMap."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        super().__init__(data)
        self.prefix = prefix


def _domain(
    document: Mapping[str, Any], source: str, index: int | None
) -> tuple[str, DescriptorNode]:
    prefix = document.prefix + "." if isinstance(document, _Scoped) else ""

    def fail(message: str, path: str, *, unsupported: bool = False) -> ValidationError:
        cls = UnsupportedError if unsupported else ValidationError
        return cls(message, source=source, document=index, path=prefix + path)

    _check_keys(document, "", fail)
    domain = document.get("domain")
    if not isinstance(domain, str) or not domain:
        raise fail("config file cannot have empty domain", "domain")
    descriptors = document.get("descriptors") or []
    node = _level(descriptors, f"{domain}.", "descriptors", fail)
    return domain, node


def _check_keys(value: Any, path: str, fail: _Fail) -> None:
    """Every mapping key anywhere must be one the format defines (the reference service's
    ``validateYamlKeys``), so a typo such as ``request_per_unit`` is an error, not a no-op."""
    if isinstance(value, dict):
        for key, item in value.items():
            item_path = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise fail(f"config error, key is not of type string: {key!r}", path)
            if key in _UNSUPPORTED_KEYS:
                raise fail(
                    f"'{key}' is not supported by pymesh's rate limit service",
                    item_path,
                    unsupported=True,
                )
            if key not in _KNOWN_KEYS:
                raise fail(f"config error, unknown key '{key}'", item_path)
            _check_keys(item, item_path, fail)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if not isinstance(item, dict):
                raise fail(
                    f"config error, yaml file contains list of type other than map: {item!r}",
                    f"{path}[{position}]",
                )
            _check_keys(item, f"{path}[{position}]", fail)


def _level(descriptors: Any, parent_key: str, path: str, fail: _Fail) -> DescriptorNode:
    if not isinstance(descriptors, list):
        raise fail("descriptors must be a list", path)
    children: dict[str, DescriptorNode] = {}
    wildcards: list[tuple[str, DescriptorNode]] = []
    for position, spec in enumerate(descriptors):
        item_path = f"{path}[{position}]"
        key = _text(spec.get("key"), f"{item_path}.key", fail)
        if not key:
            raise fail("descriptor has empty key", f"{item_path}.key")
        value = _text(spec.get("value"), f"{item_path}.value", fail)
        composite = f"{key}_{value}" if value else key
        full_key = parent_key + composite
        if composite in children:
            raise fail(f"duplicate descriptor composite key '{full_key}'", item_path)
        # Checked even without a rate_limit, where they do nothing: a typo is still a typo.
        _flag(spec.get("shadow_mode"), f"{item_path}.shadow_mode", fail)
        _flag(spec.get("detailed_metric"), f"{item_path}.detailed_metric", fail)
        limit = None
        if spec.get("rate_limit") is not None:
            limit = _rate_limit(spec, full_key, item_path, fail)
        node = _level(
            spec.get("descriptors") or [], full_key + ".", f"{item_path}.descriptors", fail
        )
        node = DescriptorNode(limit, node.children, node.wildcards)
        children[composite] = node
        if composite.endswith("*"):
            wildcards.append((composite[:-1], node))
    return DescriptorNode(None, MappingProxyType(children), tuple(wildcards))


def _rate_limit(spec: Mapping[str, Any], full_key: str, item_path: str, fail: _Fail) -> RateLimit:
    raw = spec["rate_limit"]
    path = f"{item_path}.rate_limit"
    if not isinstance(raw, dict):
        raise fail("rate_limit must be a mapping", path)
    unlimited = _flag(raw.get("unlimited"), f"{path}.unlimited", fail)
    unit_text = _text(raw.get("unit"), f"{path}.unit", fail)
    unit = Unit.__members__.get(unit_text.upper(), Unit.UNKNOWN)
    if unlimited and unit is not Unit.UNKNOWN:
        raise fail("should not specify rate limit unit when unlimited", f"{path}.unit")
    if not unlimited and unit is Unit.UNKNOWN:
        raise fail(f"invalid rate limit unit '{unit_text}'", f"{path}.unit")
    requests = raw.get("requests_per_unit", 0)
    if isinstance(requests, bool) or not isinstance(requests, int):
        raise fail(
            f"requests_per_unit must be an integer, got {requests!r}", f"{path}.requests_per_unit"
        )
    if not 0 <= requests <= _MAX_UINT32:
        raise fail(
            f"requests_per_unit {requests} is outside 0..{_MAX_UINT32}", f"{path}.requests_per_unit"
        )
    name = _text(raw.get("name"), f"{path}.name", fail)
    replaces_raw = raw.get("replaces") or []
    if not isinstance(replaces_raw, list):
        raise fail("replaces must be a list", f"{path}.replaces")
    replaces = []
    for position, entry in enumerate(replaces_raw):
        replaced = _text(entry.get("name"), f"{path}.replaces[{position}].name", fail)
        if not replaced:
            raise fail("should not have an empty replaces entry", f"{path}.replaces[{position}]")
        if replaced == name:
            raise fail(
                "replaces should not contain name of same descriptor",
                f"{path}.replaces[{position}]",
            )
        replaces.append(replaced)
    return RateLimit(
        requests_per_unit=requests,
        unit=unit,
        stat_key=full_key,
        unlimited=unlimited,
        shadow_mode=_flag(spec.get("shadow_mode"), f"{item_path}.shadow_mode", fail),
        name=name,
        replaces=tuple(replaces),
        detailed_metric=_flag(spec.get("detailed_metric"), f"{item_path}.detailed_metric", fail),
    )


def _text(value: Any, path: str, fail: _Fail) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, dict | list)):
        raise fail(f"expected a string, got {value!r}", path)
    # YAML reads ``value: 80`` as an int; the reference service reads it as the string "80".
    return str(value)


def _flag(value: Any, path: str, fail: _Fail) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(f"expected true or false, got {value!r}", path)
    return value
