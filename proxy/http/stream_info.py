"""What is known about one request, as plain values (Envoy's ``StreamInfo``).

The stream and the router fill a :class:`StreamInfo`; the access log, header formatters,
stats and telemetry only read it. It never points back at the stream, the connection or a
transport, so a reader can keep it after the stream is gone and a test can build one by hand.

:class:`ConnectionInfo` is what the downstream connection knows about itself (addresses, TLS,
peer identity). It is built once per connection and shared by every stream on it.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["ConnectionInfo", "StreamInfo", "connection_info"]

Address = tuple[str, int]
_NO_METADATA: Mapping[str, Mapping[str, object]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The downstream connection, as Envoy's ``ConnectionInfoProvider`` and ``Ssl::Connection``
    describe it. TLS fields are empty on plaintext connections; peer fields are empty unless the
    client presented a certificate that was verified."""

    remote_address: Address | None = None
    local_address: Address | None = None
    # Where the client meant to go: SO_ORIGINAL_DST after an iptables REDIRECT, else local.
    original_destination: Address | None = None
    scheme: bytes = b"http"
    requested_server_name: str | None = None
    alpn: str | None = None
    tls_version: str | None = None
    peer_uri_sans: tuple[str, ...] = ()
    peer_dns_sans: tuple[str, ...] = ()
    peer_subject: str | None = None
    peer_certificate_sha256: str | None = None
    connection_id: int = 0
    # The URI SANs of the certificate this proxy presented (Envoy's uriSanLocalCertificate).
    local_uri_sans: tuple[str, ...] = ()

    @property
    def remote_host(self) -> str:
        return self.remote_address[0] if self.remote_address is not None else ""

    @property
    def tls(self) -> bool:
        return self.tls_version is not None


def connection_info(
    transport: Any,
    *,
    scheme: bytes,
    original_destination: Address | None,
    connection_id: int,
) -> ConnectionInfo:
    """Read a connection's addresses and TLS session from its transport, once."""
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    remote = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
    local_address = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return ConnectionInfo(
            remote, local_address, original_destination or local_address, scheme,
            connection_id=connection_id,
        )  # fmt: skip
    return _tls_info(
        ssl_object, remote, local_address, original_destination or local_address, scheme,
        connection_id,
    )  # fmt: skip


def _tls_info(
    ssl_object: ssl.SSLObject,
    remote: Address | None,
    local: Address | None,
    original_destination: Address | None,
    scheme: bytes,
    connection_id: int,
) -> ConnectionInfo:
    uri_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    subject: str | None = None
    digest: str | None = None
    cert = ssl_object.getpeercert()
    if cert:
        sans = [(str(item[0]), str(item[1])) for item in cert.get("subjectAltName", ())]
        uri_sans = tuple(v for k, v in sans if k == "URI")
        dns_sans = tuple(v for k, v in sans if k == "DNS")
        # Envoy renders the subject as RFC 2253: most specific RDN first, comma-separated.
        rdns = cert.get("subject", ())
        subject = ",".join(
            "+".join(f"{_RDN_NAMES.get(k, k)}={v}" for k, v in rdn) for rdn in reversed(rdns)
        )
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            digest = hashlib.sha256(der).hexdigest()
    return ConnectionInfo(
        remote_address=remote,
        local_address=local,
        original_destination=original_destination,
        scheme=scheme,
        requested_server_name=getattr(ssl_object, "server_hostname", None) or _sni(ssl_object),
        alpn=ssl_object.selected_alpn_protocol(),
        tls_version=ssl_object.version(),
        peer_uri_sans=uri_sans,
        peer_dns_sans=dns_sans,
        peer_subject=subject,
        peer_certificate_sha256=digest,
        connection_id=connection_id,
        local_uri_sans=getattr(ssl_object.context, "pymesh_local_uri_sans", ()),
    )


def _sni(ssl_object: ssl.SSLObject) -> str | None:
    # The server side learns the client's SNI in the servername callback, which records it on
    # the object (see proxy.listener); Python offers no getter for it.
    value = getattr(ssl_object, "pymesh_sni", None)
    return value if isinstance(value, str) else None


_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


class StreamInfo:
    """One request's facts. Times are loop times (seconds); ``None`` means not reached."""

    __slots__ = (
        "_dynamic_metadata",
        "_filter_state",
        "_forwarded_remote",
        "attempt_count",
        "authority",
        "bytes_received",
        "bytes_sent",
        "connection",
        "connection_termination_details",
        "end_time",
        "first_upstream_rx_byte",
        "last_downstream_rx_byte",
        "method",
        "original_path",
        "path",
        "protocol",
        "response_code",
        "response_code_details",
        "response_flags",
        "response_trailers",
        "route_name",
        "start_time",
        "upstream_cluster",
        "upstream_cluster_metadata",
        "upstream_host",
        "upstream_local_address",
        "upstream_transport_failure_reason",
    )

    def __init__(
        self,
        connection: ConnectionInfo,
        start_time: float,
        method: bytes = b"GET",
        path: bytes = b"/",
        protocol: bytes = b"HTTP/1.1",
    ) -> None:
        self.connection = connection
        self.start_time = start_time
        self.method = method
        self.original_path = path
        # What the request's :path is now: a route's rewrite changes it (%REQ(:PATH)%).
        self.path = path
        self.authority = b""
        self.protocol = protocol
        self.end_time: float | None = None
        self.last_downstream_rx_byte: float | None = None
        self.first_upstream_rx_byte: float | None = None
        self.response_code = 0
        self.response_code_details = ""
        self.response_flags: list[str] | None = None
        # The response's trailer section, when it had one (%GRPC_STATUS% reads it first).
        self.response_trailers: list[tuple[bytes, bytes]] | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.route_name: str | None = None
        self.upstream_cluster: str | None = None
        # The cluster's filter_metadata (what cluster-metadata custom tags read).
        self.upstream_cluster_metadata: Mapping[str, object] | None = None
        self.upstream_host: str | None = None
        self.upstream_local_address: str | None = None
        self.upstream_transport_failure_reason = ""
        self.connection_termination_details = ""
        self.attempt_count = 0
        self._filter_state: dict[str, object] | None = None
        self._dynamic_metadata: dict[str, dict[str, object]] | None = None
        self._forwarded_remote: Address | None = None

    # -- the client, as the connection manager trusts it ------------------------------------
    @property
    def downstream_remote_address(self) -> Address | None:
        """Envoy's downstream remote address: the client named by ``x-forwarded-for`` when
        the connection manager trusts it (see ``request_head.forwarded_client``), else the
        connection's peer. RBAC's ``remote_ip`` and ``%DOWNSTREAM_REMOTE_ADDRESS%`` read it."""
        forwarded = self._forwarded_remote
        return forwarded if forwarded is not None else self.connection.remote_address

    def set_forwarded_remote(self, address: Address) -> None:
        self._forwarded_remote = address

    # -- response flags ----------------------------------------------------------------------
    def add_response_flag(self, flag: str) -> None:
        flags = self.response_flags
        if flags is None:
            self.response_flags = [flag]
        elif flag not in flags:
            flags.append(flag)

    def has_response_flag(self, flag: str) -> bool:
        return self.response_flags is not None and flag in self.response_flags

    def response_flags_text(self) -> str:
        """Flags in the order they were set, comma-separated (Envoy 1.40 keeps them as a list
        and renders a retried connect failure ``URX,UF``); ``-`` when there is none."""
        flags = self.response_flags
        if not flags:
            return "-"
        return ",".join(flags)

    def duration(self, now: float) -> float:
        """Seconds from the first request byte to the end (or to ``now`` while running)."""
        end = self.end_time if self.end_time is not None else now
        return end - self.start_time

    # -- slots for filters: allocated on first use, so a request that uses none pays nothing --
    @property
    def filter_state(self) -> dict[str, object]:
        """Objects filters share for the life of the request (Envoy's FilterState)."""
        state = self._filter_state
        if state is None:
            state = self._filter_state = {}
        return state

    def dynamic_metadata(self, namespace: str) -> dict[str, object]:
        """One namespace of dynamic metadata (``envoy.filters.http.rbac``, ``istio.mixer``...)."""
        metadata = self._dynamic_metadata
        if metadata is None:
            metadata = self._dynamic_metadata = {}
        entry = metadata.get(namespace)
        if entry is None:
            entry = metadata[namespace] = {}
        return entry

    @property
    def metadata_namespaces(self) -> tuple[str, ...]:
        return tuple(self._dynamic_metadata or ())

    @property
    def all_dynamic_metadata(self) -> Mapping[str, Mapping[str, object]]:
        """Every namespace, read-only and without allocating (matchers read it)."""
        metadata = self._dynamic_metadata
        return metadata if metadata is not None else _NO_METADATA
