"""``networking.istio.io`` Gateway: a load balancer at the mesh edge (ports, hosts, TLS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import EMPTY_MAP, FrozenMap, labels_match, spec_field

__all__ = [
    "Gateway",
    "Port",
    "Server",
    "ServerTLSCertificate",
    "ServerTLSMode",
    "ServerTLSSettings",
    "TLSProtocol",
]


@dataclass(frozen=True, slots=True)
class Port:
    """A listener port; ``protocol`` is HTTP|HTTPS|GRPC|GRPC-WEB|HTTP2|MONGO|TCP|TLS."""

    number: int = spec_field(required=True, unsigned=True)
    protocol: str = spec_field(required=True)
    name: str = spec_field(required=True)
    target_port: int = spec_field(0, unsigned=True, deprecated="it has no effect on Gateways")


class ServerTLSMode(StrEnum):
    PASSTHROUGH = "PASSTHROUGH"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    AUTO_PASSTHROUGH = "AUTO_PASSTHROUGH"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"
    OPTIONAL_MUTUAL = "OPTIONAL_MUTUAL"


class TLSProtocol(StrEnum):
    TLS_AUTO = "TLS_AUTO"
    TLSV1_0 = "TLSV1_0"
    TLSV1_1 = "TLSV1_1"
    TLSV1_2 = "TLSV1_2"
    TLSV1_3 = "TLSV1_3"


@dataclass(frozen=True, slots=True)
class ServerTLSCertificate:
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""


@dataclass(frozen=True, slots=True)
class ServerTLSSettings:
    """TLS terminated (or passed through) by a Gateway server or Sidecar ingress listener."""

    https_redirect: bool = False
    mode: ServerTLSMode = ServerTLSMode.PASSTHROUGH
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: tuple[str, ...] = spec_field((), non_empty=True)
    ca_cert_credential_name: str = ""
    tls_certificates: tuple[ServerTLSCertificate, ...] = spec_field((), non_empty=True)
    subject_alt_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    min_protocol_version: TLSProtocol = TLSProtocol.TLS_AUTO
    max_protocol_version: TLSProtocol = TLSProtocol.TLS_AUTO
    cipher_suites: tuple[str, ...] = ()
    ecdh_curves: tuple[str, ...] = ()
    insecure_skip_verify: bool | None = None


@dataclass(frozen=True, slots=True)
class Server:
    """One listener: a port, the hosts it serves (``[namespace/]host``), optional TLS."""

    port: Port = spec_field(required=True)  # noqa: RUF009
    hosts: tuple[str, ...] = spec_field(required=True)
    bind: str = ""
    tls: ServerTLSSettings | None = None
    default_endpoint: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Gateway:
    """Servers exposed by the gateway workloads matching ``selector`` (pod labels)."""

    KIND: ClassVar[str] = "Gateway"

    servers: tuple[Server, ...] = ()
    selector: FrozenMap[str, str] = EMPTY_MAP

    def selects(self, labels: Mapping[str, str]) -> bool:
        return labels_match(self.selector, labels)
