"""One generation per proxy class per push.

The server asks :class:`GenerationCache` for a proxy's encoded resources; proxies whose class
keys are equal (``pilot.generate.classes.proxy_class``: the same inputs to the generators) get
the very same :class:`~pilot.xds.resources.Encoded`, generated and serialised once. Entries
belong to one PushContext: a new context starts an empty cache, as istiod clears its XdsCache
on a full push.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

from pilot.xds.resources import PUSH_ORDER, Encoded, encode_resources

__all__ = ["Classify", "GenerationCache"]

Classify = Callable[[Any, Any, str], Hashable]
"""``proxy_class(ctx, proxy, type_url)``: equal keys promise equal generated resources."""
Generate = Callable[[Any, Any, str], Sequence[Message]]


class GenerationCache:
    __slots__ = ("_classify", "_ctx", "_entries", "_generate", "builds", "hits")

    def __init__(self, generate: Generate, classify: Classify | None = None) -> None:
        self._generate = generate
        self._classify = classify
        self._ctx: Any = None
        self._entries: dict[Hashable, Encoded] = {}
        #: generations run and answers served from the cache (for tests and /metrics)
        self.builds = 0
        self.hits = 0

    def encoded(self, ctx: Any, proxy: Any, type_url: str, names: frozenset[str] | None) -> Encoded:
        """``proxy``'s resources of ``type_url`` from ``ctx``, only ``names`` (None: all).
        Generator errors propagate and are not cached."""
        if self._classify is None:
            return self._build(ctx, proxy, type_url, names)
        if ctx is not self._ctx:
            self._ctx, self._entries = ctx, {}
        key = (self._classify(ctx, proxy, type_url), names)
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            return found
        found = self._entries[key] = self._build(ctx, proxy, type_url, names)
        return found

    def _build(self, ctx: Any, proxy: Any, type_url: str, names: frozenset[str] | None) -> Encoded:
        self.builds += 1
        # Types pilot does not generate get an empty answer, so the proxy stops waiting.
        messages = self._generate(ctx, proxy, type_url) if type_url in PUSH_ORDER else []
        return encode_resources(type_url, messages, names=names)
