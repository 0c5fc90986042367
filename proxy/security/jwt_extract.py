"""Where ``jwt_authn`` looks for tokens (Envoy's ``Extractor``), pure.

Each provider names headers (with a value prefix), query parameters and cookies; a provider
that names none uses ``Authorization: Bearer <token>`` and ``access_token``. Every location
remembers which issuers it was named for, so a token found there with another issuer is
"Jwt issuer is not configured". Matching Envoy 1.40:

* each header of a location's name is a token, except ``authorization``, whose repeated
  values Envoy joins with ``,`` (it is one of its inline headers); the prefix may appear
  anywhere in the value and the token is what follows it, leading whitespace dropped;
* a query parameter is the first of its name, percent-decoded; a cookie the first of its name;
* tokens come out headers first (by header name and prefix), then parameters, then cookies,
  each group in name order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "DEFAULT_LOCATIONS",
    "Extractor",
    "HeaderLocation",
    "Locations",
    "Token",
]

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class HeaderLocation:
    name: bytes  # lower-case
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Locations:
    """One provider's locations and the headers it writes (which are removed from every
    request before extraction, so a client cannot forge them)."""

    issuer: str
    headers: tuple[HeaderLocation, ...] = ()
    params: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()
    written_headers: tuple[bytes, ...] = ()


DEFAULT_LOCATIONS = ((HeaderLocation(b"authorization", "Bearer "),), ("access_token",))


@dataclass(frozen=True, slots=True)
class _Issuers:
    """The issuers a location was named for; an empty issuer allows any."""

    names: frozenset[str]
    any: bool

    def allows(self, issuer: str) -> bool:
        return self.any or issuer in self.names


@dataclass(frozen=True, slots=True)
class Token:
    """A token and where it was: the ``header`` or query ``param`` to remove once it is
    verified (cookies stay in place)."""

    value: str
    issuers: _Issuers
    header: bytes | None = None
    param: str | None = None


def _issuers(found: Iterable[str]) -> _Issuers:
    names = frozenset(found)
    return _Issuers(frozenset(n for n in names if n), "" in names)


class Extractor:
    """The union of some providers' locations (one provider, or all of them for
    ``allow_missing``)."""

    __slots__ = ("_cookies", "_headers", "_params", "sanitized")

    def __init__(self, providers: Sequence[Locations]) -> None:
        headers: dict[tuple[bytes, str], list[str]] = {}
        params: dict[str, list[str]] = {}
        cookies: dict[str, list[str]] = {}
        sanitized: list[bytes] = []
        for p in providers:
            header_list, param_list = p.headers, p.params
            if not p.headers and not p.params and not p.cookies:
                header_list, param_list = DEFAULT_LOCATIONS
            for h in header_list:
                headers.setdefault((h.name, h.prefix), []).append(p.issuer)
            for name in param_list:
                params.setdefault(name, []).append(p.issuer)
            for name in p.cookies:
                cookies.setdefault(name, []).append(p.issuer)
            sanitized.extend(p.written_headers)
        # Envoy keys header locations by name + prefix in an ordered map.
        self._headers = tuple(
            (name, prefix, _issuers(issuers))
            for (name, prefix), issuers in sorted(
                headers.items(), key=lambda item: item[0][0].decode("latin-1") + item[0][1]
            )
        )
        self._params = tuple((n, _issuers(params[n])) for n in sorted(params))
        self._cookies = tuple((n, _issuers(cookies[n])) for n in sorted(cookies))
        self.sanitized = tuple(dict.fromkeys(sanitized))

    def extract(self, headers: Headers, path: bytes) -> list[Token]:
        tokens: list[Token] = []
        for name, prefix, issuers in self._headers:
            for value in _header_values(headers, name):
                if prefix:
                    at = value.find(prefix)
                    if at < 0:
                        continue
                    value = value[at + len(prefix) :].lstrip()
                tokens.append(Token(value, issuers, name))
        if self._params:
            query = _query(path)
            if query:
                for param, issuers in self._params:
                    found = query.get(param)
                    if found is not None:
                        tokens.append(Token(found, issuers, param=param))
        if self._cookies:
            jar = _cookies(headers)
            for cookie, issuers in self._cookies:
                found = jar.get(cookie)
                if found is not None:
                    tokens.append(Token(found, issuers))
        return tokens

    def sanitize(self, headers: Headers) -> None:
        """Drop the headers the providers write (forwarded payload, claims)."""
        names = self.sanitized
        if names and any(k in names for k, _ in headers):
            headers[:] = [(k, v) for k, v in headers if k not in names]


def _header_values(headers: Headers, name: bytes) -> list[str]:
    values = [v.decode("latin-1") for k, v in headers if k == name]
    if name == b"authorization" and len(values) > 1:
        return [",".join(values)]
    return values


def _query(path: bytes) -> dict[str, str]:
    mark = path.find(b"?")
    if mark < 0:
        return {}
    end = path.find(b"#", mark)
    text = path[mark + 1 : end if end >= 0 else len(path)].decode("latin-1")
    params: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        params.setdefault(unquote(key), unquote(value))
    return params


def _cookies(headers: Headers) -> dict[str, str]:
    jar: dict[str, str] = {}
    for k, v in headers:
        if k != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                jar.setdefault(key, value)
    return jar
