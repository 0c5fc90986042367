"""Header list helpers. Headers are ``list[tuple[bytes, bytes]]`` with lower-case names,
mutated in place by the connection manager (one list per request, never shared)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from proxy.config.model_common import HeaderAppendAction, HeaderValueOption

__all__ = [
    "Headers",
    "apply_header_options",
    "get_all",
    "get_header",
    "remove_headers",
    "set_header",
]

Headers = list[tuple[bytes, bytes]]


def get_header(headers: Headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def get_all(headers: Headers, name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def set_header(headers: Headers, name: bytes, value: bytes) -> None:
    """Replace every ``name`` header with one ``value`` (appended when absent)."""
    for i, (k, _) in enumerate(headers):
        if k == name:
            headers[i] = (name, value)
            # drop later duplicates, if any
            j = i + 1
            while j < len(headers):
                if headers[j][0] == name:
                    del headers[j]
                else:
                    j += 1
            return
    headers.append((name, value))


def remove_headers(headers: Headers, names: Iterable[bytes]) -> None:
    drop = frozenset(names)
    if drop and any(k in drop for k, _ in headers):
        headers[:] = [(k, v) for k, v in headers if k not in drop]


def apply_header_options(
    headers: Headers,
    options: Iterable[HeaderValueOption],
    expand: Callable[[bytes], bytes] | None = None,
) -> None:
    """Envoy's ``*_headers_to_add`` semantics; ``expand`` renders ``%VAR%`` values."""
    for opt in options:
        value = expand(opt.value) if (opt.dynamic and expand is not None) else opt.value
        if not value and not opt.keep_empty_value:
            continue
        action = opt.append_action
        if action is HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD:
            headers.append((opt.key, value))
            continue
        present = any(k == opt.key for k, _ in headers)
        if action is HeaderAppendAction.ADD_IF_ABSENT:
            if not present:
                headers.append((opt.key, value))
        elif action is HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD or present:
            set_header(headers, opt.key, value)
