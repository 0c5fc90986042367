"""The CA's gRPC endpoint: ``istio.v1.auth.IstioCertificateService/CreateCertificate`` over
TLS, on one port for both ways of proving an identity.

It runs on grpclib over Python's ``ssl`` because a renewing workload proves itself with its
client certificate while a new one has none yet (only a token): the server must *ask* for a
client certificate without requiring one (OpenSSL's optional verification, Go's
``VerifyClientCertIfGiven`` in Istio), which grpcio's server credentials cannot express.
Clients are ordinary gRPC clients (grpcio's, Istio's agent).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from auth.ca import DEFAULT_TTL, MAX_TTL, CaSettings, CertificateAuthority, parse_csr
from auth.pem import key_pem, load_cert_chain, load_certs
from auth.policy import Authenticator, authorize
from auth.store import load_or_create
from auth.tokens import TokenIssuer, load_or_create_token_key
from pymesh.errors import (
    AuthenticationError,
    ConfigError,
    IdentityError,
    InvalidRequestError,
    PermissionDeniedError,
)
from pymesh.proto import ca_pb2

__all__ = [
    "METHOD",
    "CaOptions",
    "CaServer",
    "CaService",
    "CaStats",
    "open_ca",
    "serving_names",
]

log = structlog.get_logger(__name__)

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
_SERVING_TTL = 365 * 24 * 3600.0
_STATUS = {
    AuthenticationError: Status.UNAUTHENTICATED,
    PermissionDeniedError: Status.PERMISSION_DENIED,
    InvalidRequestError: Status.INVALID_ARGUMENT,
}


@dataclass(slots=True)
class CaStats:
    """Counters after Istio's ``citadel_server_*`` metrics."""

    csr_count: int = 0
    success_cert_issuance_count: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def serving_names(root_namespace: str, domain: str) -> list[str]:
    """The DNS names Istio's CA answers to (``CA_ADDR=istiod.istio-system.svc:15012``)."""
    return [f"istiod.{root_namespace}.svc", f"istiod.{root_namespace}.svc.{domain}"]


def _uri_sans(cert: dict[str, Any] | None) -> list[str]:
    if not cert:
        return []
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


class CaService:
    """The service, transport-free apart from reading the stream: :meth:`sign` is the whole
    decision and is what the tests of verdicts call."""

    def __init__(self, ca: CertificateAuthority, authenticator: Authenticator) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.stats = CaStats()

    def __mapping__(self) -> dict[str, Handler]:
        return {
            METHOD: Handler(
                self._create_certificate,
                Cardinality.UNARY_UNARY,
                ca_pb2.IstioCertificateRequest,
                ca_pb2.IstioCertificateResponse,
            )
        }

    def sign(
        self,
        request: ca_pb2.IstioCertificateRequest,
        metadata: dict[str, str],
        peer_uri_sans: Sequence[str],
    ) -> tuple[str, ...]:
        """Authenticate, parse, authorize, sign; an :class:`IdentityError` signs nothing."""
        self.stats.csr_count += 1
        try:
            caller = self.authenticator.authenticate(metadata, peer_uri_sans)
            parsed = parse_csr(request.csr)
            authorize(caller, parsed.identities)
            ttl = self.ca.lifetime(float(request.validity_duration))
            chain = self.ca.sign_workload(parsed, caller.identity, ttl)
        except IdentityError as exc:
            code = _STATUS.get(type(exc), Status.INVALID_ARGUMENT).name
            self.stats.refused[code] = self.stats.refused.get(code, 0) + 1
            log.warning("certificate refused", code=code, reason=str(exc))
            raise
        self.stats.success_cert_issuance_count += 1
        leaf = load_certs(chain[0], "leaf")[0]
        log.info(
            "certificate issued",
            identity=caller.identity.uri,
            credential=caller.credential.value,
            serial=format(leaf.serial_number, "x"),
            not_after=leaf.not_valid_after_utc.isoformat(),
        )
        return chain

    async def _create_certificate(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        metadata = {k.lower(): v for k, v in (stream.metadata or {}).items() if isinstance(v, str)}
        try:
            chain = self.sign(request, metadata, _uri_sans(stream.peer.cert()))
        except IdentityError as exc:
            raise GRPCError(_STATUS.get(type(exc), Status.INVALID_ARGUMENT), str(exc)) from None
        await stream.send_message(ca_pb2.IstioCertificateResponse(cert_chain=chain))


def _server_context(ca: CertificateAuthority, host: str, names: Sequence[str]) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    ips = [host] if host and host not in ("0.0.0.0", "::") and host[0].isdigit() else []
    chain = ca.sign_server(key.public_key(), names, ips, _SERVING_TTL)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(context, chain, key_pem(key))
    # Ask for a client certificate, verify it against the mesh root when one is sent, and
    # let token-only callers through: the service decides who they are.
    context.load_verify_locations(cadata=ca.root_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["h2"])
    return context


class CaServer:
    """The service on a TLS port (pilot's 15012, or ``pymesh ca``'s own)."""

    def __init__(self, service: CaService, *, names: Sequence[str]) -> None:
        self.service = service
        self.names = list(names)
        self._server: Server | None = None
        self.port = 0

    async def start(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        context = _server_context(self.service.ca, host, self.names)
        # Bound here so that port 0 (tests) tells which port it got.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"CA: cannot bind {address}: {exc.strerror}") from None
        self.port = sock.getsockname()[1]
        self._server = Server([self.service])
        await self._server.start(sock=sock, ssl=context)
        log.info("ca serving", address=f"{host}:{self.port}", names=self.names)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


@dataclass(frozen=True, slots=True)
class CaOptions:
    """Everything a CA needs, whether it runs alone or inside pilot."""

    directory: Path
    trust_domain: str = "cluster.local"
    default_ttl: float = DEFAULT_TTL
    max_ttl: float = MAX_TTL
    root_namespace: str = "istio-system"
    domain: str = "cluster.local"


def open_ca(options: CaOptions, clock: Callable[[], float]) -> tuple[CaService, TokenIssuer]:
    """The CA of ``options.directory`` (a new self-signed root when it is empty) and the
    issuer of the service-account tokens it accepts."""
    if options.default_ttl > options.max_ttl:
        raise ConfigError(
            f"workload certificate TTL {options.default_ttl:.0f}s exceeds the max "
            f"{options.max_ttl:.0f}s"
        )
    material, _ = load_or_create(options.directory, options.trust_domain, clock)
    settings = CaSettings(options.trust_domain, options.default_ttl, options.max_ttl)
    ca = CertificateAuthority(material, settings, clock)
    issuer = TokenIssuer(load_or_create_token_key(options.directory), clock, options.domain)
    return CaService(ca, Authenticator(issuer.verifier(), options.trust_domain)), issuer
