"""Host names the way Istio reads them: short names, FQDNs, wildcards, ``namespace/host``.

Matching follows Istio's ``host.Name``: ``*`` and ``*.example.com`` are wildcards that only
appear as the first label, and matching is by suffix. Validity checks raise ``ValueError``
with a human-readable reason; the validator attaches the field path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = [
    "DEFAULT_DOMAIN",
    "MESH_GATEWAY",
    "check_fqdn",
    "check_ip",
    "check_ip_or_cidr",
    "check_namespaced_host",
    "check_partial_wildcard",
    "check_wildcard_domain",
    "host_matches",
    "host_subset_of",
    "is_dns1123_label",
    "is_ip",
    "is_wildcard",
    "more_specific",
    "most_specific_match",
    "namespace_of_fqdn",
    "resolve_gateway_name",
    "service_fqdn",
    "split_namespaced_host",
    "to_fqdn",
]

DEFAULT_DOMAIN = "cluster.local"
#: The reserved gateway name meaning "every sidecar in the mesh".
MESH_GATEWAY = "mesh"

_DNS1123_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_LABEL = re.compile(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$")


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def service_fqdn(name: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """The DNS name of a Kubernetes Service: ``reviews.default.svc.cluster.local``."""
    return f"{name}.{namespace}.svc.{domain}"


def to_fqdn(host: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """Resolve a host as written in config to a fully qualified name.

    Like Istio, only names without a dot are expanded (``reviews`` in ``default`` becomes
    ``reviews.default.svc.cluster.local``); ``reviews.default``, wildcards and IPs stay as is.
    """
    # an IPv4 address has dots and an IPv6 one colons: skip the (raising) parse otherwise
    if not host or host == "*" or "." in host or (":" in host and is_ip(host)):
        return host
    return service_fqdn(host, namespace, domain)


def namespace_of_fqdn(fqdn: str, domain: str = DEFAULT_DOMAIN) -> tuple[str, str] | None:
    """``(namespace, name)`` for a Kubernetes service FQDN, else None."""
    suffix = f".svc.{domain}"
    if not fqdn.endswith(suffix):
        return None
    name, dot, ns = fqdn[: -len(suffix)].rpartition(".")
    if not dot or not name or not ns or "." in name:
        return None
    return ns, name


def host_matches(a: str, b: str) -> bool:
    """True when the two hosts have a common member (Istio ``Name.Matches``).

    ``*.example.com`` matches ``a.example.com`` and ``*.com``; ``*`` matches everything.
    """
    if is_wildcard(a):
        if is_wildcard(b):
            return a[1:].endswith(b[1:]) if len(a) >= len(b) else b[1:].endswith(a[1:])
        return b.endswith(a[1:])
    if is_wildcard(b):
        return a.endswith(b[1:])
    return a == b


def host_subset_of(a: str, b: str) -> bool:
    """True when every host matched by ``a`` is also matched by ``b`` (Istio ``SubsetOf``)."""
    if is_wildcard(a):
        if is_wildcard(b):
            return len(a) >= len(b) and a[1:].endswith(b[1:])
        return False
    if is_wildcard(b):
        return a.endswith(b[1:])
    return a == b


def more_specific(a: str, b: str) -> bool:
    """Istio's host ordering: exact before wildcard, then longer first, then alphabetical."""
    aw, bw = is_wildcard(a), is_wildcard(b)
    if aw != bw:
        return bw
    if len(a) == len(b):
        return a < b
    return len(a) > len(b)


def most_specific_match(host: str, candidates: Iterable[str]) -> str | None:
    """The candidate that serves ``host``: an exact match, else the longest matching wildcard."""
    best: str | None = None
    for candidate in candidates:
        if candidate == host:
            return candidate
        if (
            is_wildcard(candidate)
            and host_subset_of(host, candidate)
            and (best is None or more_specific(candidate, best))
        ):
            best = candidate
    return best


def split_namespaced_host(value: str) -> tuple[str, str]:
    """``"ns/host"`` -> ``("ns", "host")``; a bare host has namespace ``"*"``."""
    ns, slash, host = value.partition("/")
    if not slash:
        return "*", value
    return ns, host


def resolve_gateway_name(gateway: str, namespace: str) -> str:
    """Normalise a VirtualService ``gateways`` entry to ``namespace/name`` (or ``mesh``).

    Accepts ``name`` (same namespace), ``ns/name``, ``./name`` and the legacy ``name.ns``.
    """
    if gateway == MESH_GATEWAY:
        return gateway
    ns, slash, name = gateway.partition("/")
    if slash:
        return f"{namespace if ns == '.' else ns}/{name}"
    if "." in gateway:
        name, _, ns = gateway.partition(".")
        return f"{ns.split('.')[0]}/{name}"
    return f"{namespace}/{gateway}"


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and _DNS1123_LABEL.match(value) is not None


def _check_length(name: str) -> None:
    if not name:
        raise ValueError("empty domain name not allowed")
    if len(name) > 255:
        raise ValueError(f"domain name {name!r} too long (max 255)")


def _check_labels(domain: str, full: str) -> None:
    parts = domain.split(".")
    if parts[-1].isdigit():
        raise ValueError(
            f"domain name {full!r} invalid (top level domain {parts[-1]!r} is numeric)"
        )
    for i, label in enumerate(parts):
        # A trailing dot (``istio.io.``) is an unambiguous absolute name.
        if i == len(parts) - 1 and label == "":
            return
        if not is_dns1123_label(label):
            raise ValueError(f"domain name {full!r} invalid (label {label!r} invalid)")


def check_fqdn(name: str) -> None:
    """A DNS name without wildcards (``a.example.com`` or a short name like ``reviews``)."""
    _check_length(name)
    _check_labels(name, name)


def check_wildcard_domain(name: str) -> None:
    """A DNS name whose first label may be a wildcard (``*``, ``*.example.com``, ``*-x.com``)."""
    _check_length(name)
    first, dot, rest = name.partition(".")
    if len(first) > 63 or _WILDCARD_LABEL.match(first) is None:
        raise ValueError(f"domain name {name!r} invalid (label {first!r} invalid)")
    if dot:
        _check_labels(rest, name)


def check_partial_wildcard(name: str) -> None:
    """Reject ``*foo.com``: a wildcard must be a whole first label."""
    if "*" in name and name != "*" and not name.startswith("*."):
        raise ValueError(f"partial wildcard {name!r} not allowed")


def check_ip(text: str) -> None:
    if not is_ip(text):
        raise ValueError(f"{text!r} is not a valid IP address")


def check_ip_or_cidr(text: str) -> None:
    if text.count("/") == 1:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not a valid CIDR block") from None
        return
    check_ip(text)


def check_namespaced_host(value: str, *, gateway: bool) -> None:
    """Validate Gateway server hosts and Sidecar egress hosts (``ns/dnsName``).

    Gateways also accept a bare host; Sidecars require the namespace part. The namespace may
    be ``*`` or ``.``; the DNS part must be an FQDN or wildcard, never a short name.
    """
    ns, slash, host = value.partition("/")
    if not slash:
        if not gateway:
            raise ValueError(f"host {value!r} must be of the form namespace/dnsName")
        ns, host = "*", value
    elif not ns or not host:
        raise ValueError(f"namespace and dnsName in host {value!r} cannot be empty")
    # Sidecars may exclude a namespace with "~" ("~prod/*"); a bare "~" matches no namespace.
    scope = ns if gateway else ns.removeprefix("~")
    if (
        scope not in ("*", ".")
        and not (scope == "" and not gateway)
        and not is_dns1123_label(scope)
    ):
        raise ValueError(f"invalid namespace {ns!r} in host {value!r}")
    if host != "*" and "." not in host:
        raise ValueError(f"short names (non FQDN) are not allowed: {host!r}")
    try:
        check_wildcard_domain(host)
    except ValueError:
        if not (gateway and is_ip(host)):
            raise
    check_partial_wildcard(host)
