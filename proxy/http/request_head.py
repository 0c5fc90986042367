"""What the connection manager does to a request head before routing: the internal-request
rule, ``x-forwarded-for`` and the ``x-envoy-*`` headers an external request may not carry.
Pure functions over the header list; the stream calls them when its config asks for them."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from proxy.http.headers import get_all, get_header, remove_headers, set_header
from proxy.routing.retry import ENVOY_REQUEST_CONTROL_HEADERS

if TYPE_CHECKING:
    from proxy.config.model_common import CidrRange
    from proxy.config.model_http import SetCurrentClientCertDetails
    from proxy.http.filter import Headers
    from proxy.http.hcm import HcmRuntime
    from proxy.http.stream_info import ConnectionInfo, StreamInfo

__all__ = [
    "XFCC",
    "append_xff",
    "forward_client_cert",
    "forwarded_client",
    "forwarding_headers",
    "has_envoy_headers",
    "mark_internal",
]

XFCC = b"x-forwarded-client-cert"

# What Envoy removes from external requests (cleanInternalHeaders), and from edge requests.
_EXTERNAL_STRIPPED = ENVOY_REQUEST_CONTROL_HEADERS | {
    b"x-envoy-internal",
    b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace",
    b"x-envoy-ip-tags",
    b"x-envoy-original-url",
    b"x-envoy-upstream-alt-stat-name",
}
_EDGE_STRIPPED = _EXTERNAL_STRIPPED | {
    b"x-envoy-decorator-operation",
    b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node",
}


def has_envoy_headers(headers: Headers) -> bool:
    # A plain loop: any() over a generator costs twice as much on this per-request path.
    for k, _ in headers:  # noqa: SIM110
        if k[:8] == b"x-envoy-":
            return True
    return False


def _in_ranges(address: bytes, ranges: tuple[CidrRange, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.decode("latin-1"))
    except ValueError:
        return False
    return any(r.contains(ip) for r in ranges)


def mark_internal(
    headers: Headers,
    peer: str,
    ranges: tuple[CidrRange, ...],
    *,
    use_remote_address: bool,
) -> bool:
    """Envoy's internal-request rule: a request is internal when the address it comes from
    (the peer with use_remote_address and no XFF yet, else the one XFF entry) is in
    ``internal_address_config``, which is empty by default. Only internal requests may steer
    the router with x-envoy-* headers; an external request loses them. Returns whether the
    request is internal (it then carries ``x-envoy-internal``)."""
    internal = False
    if ranges:
        xff = get_all(headers, b"x-forwarded-for")
        address: bytes | None = None
        if use_remote_address:
            address = None if xff else peer.encode()
        else:
            entries = b",".join(xff).split(b",") if xff else []
            address = entries[0].strip() if len(entries) == 1 else None
        internal = address is not None and _in_ranges(address, ranges)
    if internal:
        set_header(headers, b"x-envoy-internal", b"true")
    elif has_envoy_headers(headers):
        remove_headers(headers, _EDGE_STRIPPED if use_remote_address else _EXTERNAL_STRIPPED)
    return internal


def append_xff(headers: Headers, peer: str) -> None:
    address = peer.encode()
    xff = get_header(headers, b"x-forwarded-for")
    set_header(headers, b"x-forwarded-for", xff + b"," + address if xff else address)


def forwarded_client(headers: Headers, skip: int) -> str | None:
    """The client address ``x-forwarded-for`` names after skipping ``skip`` trusted hops from
    its right end (Envoy's ``getLastAddressFromXFF``); repeated headers count as one list.
    None when the list is too short or the entry is not an IP address."""
    values = get_all(headers, b"x-forwarded-for")
    if not values:
        return None
    entries = b",".join(values).split(b",")
    if skip >= len(entries):
        return None
    candidate = entries[len(entries) - 1 - skip].strip().decode("latin-1")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def forward_client_cert(
    headers: Headers,
    mode: str,
    details: SetCurrentClientCertDetails | None,
    connection: ConnectionInfo,
) -> None:
    """Envoy's ``forward_client_cert_details`` on ``x-forwarded-client-cert``: without a
    client certificate the header is dropped (unless ALWAYS_FORWARD_ONLY); with one it is
    kept (FORWARD_ONLY), dropped (SANITIZE), or this hop's element is appended
    (APPEND_FORWARD) or made the whole header (SANITIZE_SET)."""
    if connection.peer_certificate_sha256 is None:
        if mode != "ALWAYS_FORWARD_ONLY":
            remove_headers(headers, (XFCC,))
        return
    if mode in ("FORWARD_ONLY", "ALWAYS_FORWARD_ONLY"):
        return
    if mode == "SANITIZE":
        remove_headers(headers, (XFCC,))
        return
    element = [f"By={uri}" for uri in connection.local_uri_sans]
    element.append(f"Hash={connection.peer_certificate_sha256}")
    if details is not None:
        if details.subject:
            element.append(f'Subject="{connection.peer_subject or ""}"')
        if details.uri:
            element.extend(f"URI={uri}" for uri in connection.peer_uri_sans)
        if details.dns:
            element.extend(f"DNS={dns}" for dns in connection.peer_dns_sans)
    value = ";".join(element).encode()
    current = get_all(headers, XFCC) if mode == "APPEND_FORWARD" else []
    set_header(headers, XFCC, b",".join([*current, value]))


def forwarding_headers(
    headers: Headers,
    hcm: HcmRuntime,
    info: StreamInfo,
    *,
    forwarded_proto: bytes | None,
    envoy_headers: bool,
    forwarded_for: bool,
    client_cert: bool,
) -> None:
    """The connection manager's forwarding fields on a request head, from what one scan of
    it found: the internal-request rule, ``x-forwarded-proto``, ``x-forwarded-for`` (and the
    client it names), ``x-forwarded-client-cert``."""
    peer = info.connection.remote_host
    if envoy_headers or hcm.internal_ranges:
        mark_internal(headers, peer, hcm.internal_ranges, use_remote_address=hcm.use_remote_address)
    scheme = info.connection.scheme
    if hcm.use_remote_address:
        # An untrusted peer's claim about the scheme is overwritten, as in Envoy.
        if hcm.xff_num_trusted_hops == 0 or forwarded_proto is None:
            set_header(headers, b"x-forwarded-proto", scheme)
        if not hcm.skip_xff_append:
            append_xff(headers, peer)
    elif forwarded_proto is None:
        headers.append((b"x-forwarded-proto", scheme))
    if client_cert or info.connection.peer_certificate_sha256 is not None:
        forward_client_cert(headers, hcm.xfcc, hcm.xfcc_details, info.connection)
    if forwarded_for and (hcm.xff_num_trusted_hops or not hcm.use_remote_address):
        # Envoy trusts the XFF entry this many hops from the right as the client; with
        # use_remote_address the peer was just appended, so the count is the same.
        client = forwarded_client(headers, hcm.xff_num_trusted_hops)
        if client is not None:
            info.set_forwarded_remote((client, 0))
