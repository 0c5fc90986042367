"""Shared value types of the proxy model: matchers, header mutations, addresses.

Conventions for every ``model_*`` module:

* Values the data path compares against are pre-encoded: header names are lower-case
  ``bytes``, header values and literals are ``bytes``, regexes are ``re.Pattern[bytes]``.
* Durations are float seconds; ``None`` means "not set" where Envoy distinguishes it.
* Every percentage (``FractionalPercent``, ``Percent``, and Envoy's ``*_percent`` integers) is a
  float fraction 0..1, whatever the Envoy field is called.
* Defaults are Envoy's defaults.
* Sequences are tuples; free-form maps (metadata, typed per-filter configs) are read-only
  mappings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "EMPTY_MAPPING",
    "CidrRange",
    "ConfigSource",
    "CustomTag",
    "CustomTagKind",
    "HeaderAppendAction",
    "HeaderMatcher",
    "HeaderValueOption",
    "Int64Range",
    "Locality",
    "PipeAddress",
    "QueryParameterMatcher",
    "SocketAddress",
    "StringMatchKind",
    "StringMatcher",
    "empty_mapping",
]

EMPTY_MAPPING: Mapping[str, object] = MappingProxyType({})


def empty_mapping() -> Mapping[str, object]:
    """Default factory for mapping fields: one shared read-only empty mapping."""
    return EMPTY_MAPPING


class StringMatchKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    CONTAINS = "contains"
    REGEX = "safe_regex"


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """Envoy ``type.matcher.v3.StringMatcher``.

    With ``ignore_case`` the ``value`` is already lower-cased: lower-case the input and
    compare. ``ignore_case`` has no effect on regexes (as in Envoy). A regex must match the
    whole input (RE2 ``FullMatch`` semantics): use ``regex.fullmatch``.
    """

    kind: StringMatchKind
    value: bytes
    ignore_case: bool = False
    regex: re.Pattern[bytes] | None = None

    def matches(self, candidate: bytes) -> bool:
        if self.kind is StringMatchKind.REGEX:
            assert self.regex is not None
            return self.regex.fullmatch(candidate) is not None
        if self.ignore_case:
            candidate = candidate.lower()
        if self.kind is StringMatchKind.EXACT:
            return candidate == self.value
        if self.kind is StringMatchKind.PREFIX:
            return candidate.startswith(self.value)
        if self.kind is StringMatchKind.SUFFIX:
            return candidate.endswith(self.value)
        return self.value in candidate


@dataclass(frozen=True, slots=True)
class Int64Range:
    """Half-open ``[start, end)``, as Envoy's ``type.v3.Int64Range``."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """Envoy ``config.route.v3.HeaderMatcher``; exactly one of the three specifiers is set.

    The deprecated ``exact_match``/``prefix_match``/... fields arrive here as ``string_match``.
    With no specifier at all Envoy matches on presence, so ``present_match`` is True then.
    ``present_match=False`` matches when the header is absent. Several values of one header
    are joined with ``,`` before matching (Envoy's behaviour).
    """

    name: bytes
    string_match: StringMatcher | None = None
    present_match: bool | None = None
    range_match: Int64Range | None = None
    invert_match: bool = False
    treat_missing_header_as_empty: bool = False


@dataclass(frozen=True, slots=True)
class QueryParameterMatcher:
    """``string_match=None`` means "the parameter is present" (Envoy ignores present_match's
    value: a parameter that is absent never matches)."""

    name: bytes
    string_match: StringMatcher | None = None


class HeaderAppendAction(StrEnum):
    APPEND_IF_EXISTS_OR_ADD = "APPEND_IF_EXISTS_OR_ADD"
    ADD_IF_ABSENT = "ADD_IF_ABSENT"
    OVERWRITE_IF_EXISTS_OR_ADD = "OVERWRITE_IF_EXISTS_OR_ADD"
    OVERWRITE_IF_EXISTS = "OVERWRITE_IF_EXISTS"


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """One header to add. Envoy default: ``APPEND_IF_EXISTS_OR_ADD``; the deprecated ``append``
    boolean arrives here already mapped (true → APPEND_IF_EXISTS_OR_ADD, false →
    OVERWRITE_IF_EXISTS_OR_ADD).

    ``dynamic`` is True when ``value`` holds Envoy substitution commands (``%...%``) that the
    runtime must expand per request (``%%`` is a literal ``%``); when False the value is
    literal and can be used as is.
    """

    key: bytes
    value: bytes
    append_action: HeaderAppendAction = HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
    keep_empty_value: bool = False
    dynamic: bool = False


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """A TCP socket address. ``host`` is an IP literal for listeners and static endpoints, or
    a DNS name for STRICT_DNS/LOGICAL_DNS clusters."""

    host: str
    port: int
    ipv4_compat: bool = False


@dataclass(frozen=True, slots=True)
class PipeAddress:
    """A Unix domain socket (``pipe.path``); ``mode`` is the file mode to set."""

    path: str
    mode: int = 0


@dataclass(frozen=True, slots=True)
class CidrRange:
    address_prefix: str
    prefix_len: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address in self.network


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where a dynamic resource comes from: ADS (``ads: {}``), or for SDS secrets a gRPC
    ``api_config_source`` to a static cluster;
    ``initial_fetch_timeout`` defaults to Envoy's 15 s (0 = wait forever)."""

    ads: bool = True
    resource_api_version: str = "V3"
    initial_fetch_timeout: float = 15.0
    # An ``api_config_source`` over gRPC to this static cluster (SDS from the identity
    # agent, as Istio's bootstrap names ``sds-grpc``); ``ads`` is then False.
    api_cluster: str | None = None


class CustomTagKind(StrEnum):
    LITERAL = "literal"  # environment tags too: Envoy reads the variable once, at load
    REQUEST_HEADER = "request_header"
    CLUSTER_METADATA = "cluster_metadata"


@dataclass(frozen=True, slots=True)
class CustomTag:
    """Envoy ``type.tracing.v3.CustomTag``, as access loggers and tracers apply it. ``value``
    is the literal, or the environment variable's value read when the config was translated;
    ``name`` is the header name (lower case); ``path`` the metadata key path (filter name
    first). An empty result is not set."""

    tag: str
    kind: CustomTagKind
    value: str = ""
    name: bytes = b""
    path: tuple[str, ...] = ()
    default_value: str = ""
