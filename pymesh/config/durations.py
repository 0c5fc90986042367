"""Durations as Istio's CRDs write them: Go ``time.ParseDuration`` syntax (``"0.5s"``, ``"1m"``,
``"10ms"``, ``"1h30m"``). The model keeps them as float seconds; xDS wants seconds + nanos.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "format_duration",
    "parse_duration",
    "parse_duration_ns",
    "to_seconds_nanos",
]

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu, also accepted by Go
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# Go's limit: durations are int64 nanoseconds.
_MAX_NS = 2**63 - 1


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration into integer nanoseconds. Raises ValueError on bad syntax.

    Negative durations parse (Go accepts them); callers decide whether they are allowed.
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string such as '1s', got {type(text).__name__}")
    s = text.strip()
    sign = 1
    if s and s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = Decimal(0)
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number with a unit "
                "(ns, us, ms, s, m, h), e.g. '1.5s' or '100ms'"
            )
        total += Decimal(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    # Go truncates sub-nanosecond fractions.
    ns = int(total)
    if ns > _MAX_NS:
        raise ValueError(f"invalid duration {text!r}: out of range")
    return sign * ns


def parse_duration(text: str) -> float:
    """Parse a Go duration into float seconds (``"0.5s"`` -> ``0.5``)."""
    return parse_duration_ns(text) / 1e9


def to_seconds_nanos(seconds: float) -> tuple[int, int]:
    """Split float seconds into protobuf ``Duration`` (seconds, nanos), nanos rounded."""
    total_ns = round(seconds * 1e9)
    secs, nanos = divmod(abs(total_ns), 1_000_000_000)
    if total_ns < 0:
        return -secs, -nanos
    return secs, nanos


def format_duration(seconds: float) -> str:
    """Render float seconds the way Istio prints them back (``0.5`` -> ``"500ms"``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)):
        if ns % size == 0:
            return f"{sign}{ns // size}{unit}"
    for unit, size in (("ms", 1_000_000), ("us", 1_000)):
        if ns % size == 0:
            return f"{sign}{ns // size}{unit}"
    return f"{sign}{ns}ns"
