"""Checks shared by several kinds (ports, labels, regexes, string matches, exportTo...)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from pymesh.config import hosts
from pymesh.config.issues import Reporter
from pymesh.config.model.networking import Destination, Percent, StringMatch

__all__ = [
    "HEADER_NAME",
    "PROTOCOLS",
    "check",
    "check_destination",
    "check_export_to",
    "check_gateway_names",
    "check_header_value",
    "check_labels",
    "check_percentage",
    "check_port",
    "check_port_name",
    "check_protocol",
    "check_regex",
    "check_selector_labels",
    "check_string_match",
    "check_subset_name",
    "protocol_is_http",
    "protocol_is_tls",
]

# RFC 7230 token characters.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
# Control characters other than horizontal tab are not allowed in header values.
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_LABEL_NAME = re.compile(r"^(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_REGEX = 1024

#: Istio's port protocols (case-insensitive); the value is the canonical name.
PROTOCOLS = {
    p.lower(): p
    for p in (
        [
            "HTTP",
            "HTTP2",
            "HTTPS",
            "GRPC",
            "GRPC-WEB",
            "HTTP_PROXY",
            "TCP",
            "TLS",
            "UDP",
            "MONGO",
            "REDIS",
            "MYSQL",
        ]
    )
}


def check(rep: Reporter, path: str, fn: Callable[[str], None], value: str) -> None:
    """Run a ``hosts.check_*`` style function, turning its ValueError into a located error."""
    try:
        fn(value)
    except ValueError as e:
        rep.fail(path, str(e))


def check_port(rep: Reporter, path: str, number: int) -> None:
    if not 1 <= number <= 65535:
        rep.fail(path, f"port number {number} must be in the range 1..65535")


def check_port_name(rep: Reporter, path: str, name: str) -> None:
    if not hosts.is_dns1123_label(name):
        rep.fail(path, f"invalid port name {name!r} (must be a DNS-1123 label)")


def check_protocol(rep: Reporter, path: str, protocol: str) -> None:
    # Empty means "sniff the protocol".
    if protocol and protocol.lower() not in PROTOCOLS:
        known = ", ".join(PROTOCOLS.values())
        rep.fail(path, f"unsupported protocol {protocol!r} (known: {known})")


def protocol_is_http(protocol: str) -> bool:
    return protocol.lower() in ("http", "http2", "http_proxy", "grpc", "grpc-web")


def protocol_is_tls(protocol: str) -> bool:
    return protocol.lower() in ("https", "tls")


def check_percentage(rep: Reporter, path: str, percentage: Percent | None) -> None:
    if percentage is None:
        return
    v = percentage.value
    if v < 0 or v > 100 or 0 < v < 0.0001:
        rep.fail(path, f"percentage {v:g} is neither 0 nor in the range [0.0001, 100]")


def check_regex(rep: Reporter, path: str, pattern: str) -> None:
    if not pattern:
        rep.fail(path, "regex must not be empty")
    if len(pattern) > _MAX_REGEX:
        rep.fail(path, f"regex is too large ({len(pattern)} characters, max {_MAX_REGEX})")
    try:
        re.compile(pattern)
    except re.error as e:
        rep.fail(path, f"invalid regex {pattern!r}: {e}")


def check_string_match(
    rep: Reporter, path: str, sm: StringMatch, *, presence_ok: bool = False
) -> None:
    """Exactly one of exact/prefix/regex; ``{}`` only where Istio reads it as "present"."""
    if sm.is_empty:
        if presence_ok:
            return
        rep.fail(path, "one of exact, prefix or regex must be set")
    if sm.prefix == "":
        rep.fail(f"{path}.prefix", "prefix match must not be empty")
    if sm.regex is not None:
        check_regex(rep, f"{path}.regex", sm.regex)


def check_header_value(rep: Reporter, path: str, value: str) -> None:
    if not _HEADER_VALUE.match(value):
        rep.fail(path, f"header value {value!r} contains control characters")


def _label_key_error(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"invalid label key {key!r} (bad prefix {prefix!r})"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"invalid label key {key!r}"
    return None


def check_labels(
    rep: Reporter, path: str, labels: Mapping[str, str], *, values: bool = True
) -> None:
    """Kubernetes label rules; ``values=False`` for annotations (any value allowed)."""
    for key, value in labels.items():
        kpath = f"{path}[{key}]"
        err = _label_key_error(key)
        if err:
            rep.fail(kpath, err)
        if values and value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            rep.fail(kpath, f"invalid label value {value!r}")


def check_selector_labels(rep: Reporter, path: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        kpath = f"{path}[{key}]"
        if not key:
            rep.fail(kpath, "empty key is not supported in a selector")
        if "*" in key or "*" in value:
            rep.fail(kpath, f"wildcard is not supported in a selector: {key}={value}")
    check_labels(rep, path, labels)


def check_subset_name(rep: Reporter, path: str, name: str) -> None:
    if not name:
        rep.fail(path, "subset name must not be empty")
    if not hosts.is_dns1123_label(name):
        rep.fail(path, f"subset name {name!r} is invalid (must be a DNS-1123 label)")


def check_destination(rep: Reporter, path: str, dest: Destination) -> None:
    if dest.host == "*":
        rep.fail(f"{path}.host", "destination host must not be '*'")
    check(rep, f"{path}.host", hosts.check_wildcard_domain, dest.host)
    if dest.subset:
        check_subset_name(rep, f"{path}.subset", dest.subset)
    if dest.port is not None:
        check_port(rep, f"{path}.port.number", dest.port.number)


def check_gateway_names(rep: Reporter, path: str, names: Iterable[str]) -> None:
    for i, name in enumerate(names):
        gpath = f"{path}[{i}]"
        ns, slash, gw = name.partition("/")
        if not slash:
            if "." in name:
                legacy_name, _, legacy_ns = name.partition(".")
                rep.warn(
                    gpath,
                    f"legacy gateway name format {name!r}; "
                    f"prefer namespace/name: '{legacy_ns}/{legacy_name}'",
                )
            check(rep, gpath, hosts.check_fqdn, name)
            continue
        if not ns or not gw:
            rep.fail(gpath, f"namespace and gateway name in {name!r} must not be empty")
        if ns != "." and not hosts.is_dns1123_label(ns):
            rep.fail(gpath, f"invalid namespace {ns!r} in gateway {name!r}")
        if not hosts.is_dns1123_label(gw):
            rep.fail(gpath, f"invalid gateway name {gw!r}")


def check_export_to(
    rep: Reporter, path: str, export_to: tuple[str, ...], namespace: str, *, service_entry: bool
) -> None:
    seen: set[str] = set()
    for i, entry in enumerate(export_to):
        epath = f"{path}[{i}]"
        key = namespace if entry == "." else entry
        if key in seen:
            rep.fail(epath, f"duplicate exportTo entry {entry!r}")
        seen.add(key)
        if entry in (".", "*") or (entry == "~" and service_entry):
            continue
        if not hosts.is_dns1123_label(entry):
            rep.fail(epath, f"invalid exportTo value {entry!r} (expected '.', '*' or a namespace)")
    if "*" in seen and len(export_to) > 1:
        rep.fail(path, "cannot combine '*' with other exportTo values")
    if "~" in seen and len(export_to) > 1:
        rep.fail(path, "cannot export to no one ('~') and to someone")
