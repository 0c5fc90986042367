"""Building blocks shared by every kind: immutable maps, field metadata and the resource envelope.

Spec classes are frozen dataclasses whose attribute names are the snake_case form of the
Istio/Kubernetes JSON names (``per_try_timeout`` is ``perTryTimeout``). Metadata attached with
:func:`spec_field` tells the decoder (:mod:`pymesh.config.codec`) what the JSON alone cannot say:
the JSON name when it differs, whether the field is required, a duration, unsigned, deprecated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

__all__ = [
    "EMPTY_MAP",
    "FieldInfo",
    "FrozenMap",
    "LabelSelector",
    "Oneofs",
    "PolicyTargetReference",
    "Resource",
    "Struct",
    "field_info",
    "labels_match",
    "spec_field",
]

#: Type of the ``ONEOFS`` class attribute: groups of attribute names of which at most one is set.
Oneofs = tuple[tuple[str, ...], ...]

K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping that keeps insertion order (YAML order)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


EMPTY_MAP: FrozenMap[Any, Any] = FrozenMap()

#: ``google.protobuf.Struct``: free-form JSON, frozen (mappings become FrozenMaps, lists tuples).
Struct = FrozenMap[str, object]


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """What the decoder needs to know about a spec field beyond its Python type."""

    json: str | None = None
    aliases: tuple[str, ...] = ()
    required: bool = False
    duration: bool = False
    #: durations: whether ``0s`` is accepted (Istio's ``duration-validation:none`` fields)
    zero_ok: bool = False
    #: integers declared uint32/uint64 in the proto: negative values are rejected
    unsigned: bool = False
    #: set for deprecated fields; the text is the advice given in the warning
    deprecated: str | None = None
    #: lists and maps that, when present, must not be empty (CRD ``minItems``/``minProperties``)
    non_empty: bool = False


_DEFAULT_INFO = FieldInfo()
_META_KEY = "pymesh"


def spec_field(
    default: Any = dataclasses.MISSING,
    *,
    json: str | None = None,
    aliases: tuple[str, ...] = (),
    required: bool = False,
    duration: bool = False,
    zero_ok: bool = False,
    unsigned: bool = False,
    deprecated: str | None = None,
    non_empty: bool = False,
) -> Any:
    """A dataclass field carrying :class:`FieldInfo`; ``default`` must be immutable.

    Leave ``default`` out for required fields that come first in their class. Ruff's RUF009
    cannot tell this is a field specifier like ``dataclasses.field``, hence its ``noqa``s.
    """
    info = FieldInfo(json, aliases, required, duration, zero_ok, unsigned, deprecated, non_empty)
    return dataclasses.field(default=default, metadata=MappingProxyType({_META_KEY: info}))


def field_info(f: dataclasses.Field[Any]) -> FieldInfo:
    info = f.metadata.get(_META_KEY)
    return info if isinstance(info, FieldInfo) else _DEFAULT_INFO


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every selector label is present with the same value (empty selects all)."""
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """``istio.type.v1beta1.WorkloadSelector``: selects workloads by ``matchLabels``."""

    match_labels: FrozenMap[str, str] = EMPTY_MAP

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels_match(self.match_labels, labels)


@dataclass(frozen=True, slots=True)
class PolicyTargetReference:
    """``istio.type.v1beta1.PolicyTargetReference``: a policy attached to a Service or Gateway."""

    kind: str = spec_field(required=True)
    name: str = spec_field(required=True)
    group: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Resource(Generic[S]):
    """One configuration object: the envelope (kind, apiVersion, metadata) and its typed spec.

    ``source`` and ``document`` say where it was read from; they take no part in equality,
    so the same content read from two files compares equal.
    """

    kind: str
    api_version: str
    name: str
    namespace: str
    spec: S
    labels: FrozenMap[str, str] = EMPTY_MAP
    annotations: FrozenMap[str, str] = EMPTY_MAP
    source: str | None = dataclasses.field(default=None, compare=False)
    document: int | None = dataclasses.field(default=None, compare=False)

    CLUSTER_SCOPED: ClassVar[frozenset[str]] = frozenset({"Namespace"})

    @property
    def group(self) -> str:
        """The API group (``networking.istio.io``); empty for the Kubernetes core group."""
        return self.api_version.rpartition("/")[0]

    @property
    def key(self) -> tuple[str, str, str]:
        """``(kind, namespace, name)``, the identity used by snapshots."""
        return (self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` for messages."""
        if self.kind in self.CLUSTER_SCOPED:
            return f"{self.kind} {self.name}"
        return f"{self.kind} {self.namespace}/{self.name}"
