"""The workload side of the CA API: a key made in memory, its CSR, and the gRPC call.

:class:`CaClient` is an ordinary grpcio client of ``IstioCertificateService`` over TLS
(trusting the mesh root, checking the CA's name as Istio's agent checks
``istiod.istio-system.svc``). It proves who it is with a service-account token, or on
renewal with its current certificate (mTLS). The answer is checked before it is used: the
leaf must carry our key and exactly the identity we asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.pem import PrivateKey, cert_pem, key_pem, load_certs
from pymesh.errors import (
    AuthenticationError,
    ControlPlaneError,
    InvalidRequestError,
    PermissionDeniedError,
)
from pymesh.identity import SpiffeId
from pymesh.proto import ca_pb2, ca_pb2_grpc

__all__ = ["CaClient", "KeyType", "WorkloadCertificate", "make_csr", "new_key"]

_ERRORS: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
}


class KeyType(Enum):
    EC_P256 = "ec"
    RSA_2048 = "rsa"


def new_key(kind: KeyType = KeyType.EC_P256) -> PrivateKey:
    if kind is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: PrivateKey, identity: SpiffeId) -> str:
    """A PEM CSR for ``identity`` (URI SAN only, empty subject, as Istio's agent sends)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """One issued identity: the PEM chain (leaf first), its key, and the mesh root."""

    identity: SpiffeId
    chain: tuple[str, ...]
    key: bytes
    root: str
    serial: int
    not_before: float
    not_after: float

    @property
    def chain_pem(self) -> str:
        """Leaf and intermediates: what a TLS peer is sent (the root is the peer's own)."""
        certs = list(self.chain)
        if len(certs) > 1 and certs[-1].strip() == self.root.strip():
            certs.pop()
        return "".join(certs)

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before

    @classmethod
    def from_response(
        cls, identity: SpiffeId, key: PrivateKey, chain: Sequence[str], root: str
    ) -> WorkloadCertificate:
        """Check the CA's answer: a parseable chain whose leaf holds ``key`` and names
        exactly ``identity``. ControlPlaneError otherwise (never use a wrong certificate)."""
        if not chain:
            raise ControlPlaneError("the CA returned an empty certificate chain")
        try:
            certs = [load_certs(pem, "certificate chain")[0] for pem in chain]
        except ValueError as exc:
            raise ControlPlaneError(f"the CA returned a bad chain: {exc}") from None
        leaf = certs[0]
        if leaf.public_key() != key.public_key():
            raise ControlPlaneError("the CA returned a certificate for another key")
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if uris != [identity.uri]:
            raise ControlPlaneError(f"the CA returned a certificate for {uris}, not {identity}")
        return cls(
            identity=identity,
            chain=tuple(cert_pem(c) for c in certs),
            key=key_pem(key),
            root=root,
            serial=leaf.serial_number,
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
        )


class CaClient:
    """``CreateCertificate`` calls to one CA. ``root`` is the PEM trust anchor for the CA's
    serving certificate (the mesh root), ``server_name`` the name that certificate must
    carry."""

    def __init__(
        self, address: str, root: str, *, server_name: str = "istiod.istio-system.svc"
    ) -> None:
        self.address = address
        self.root = root
        self.server_name = server_name

    async def create_certificate(
        self,
        csr: str,
        ttl: float,
        *,
        token: str | None = None,
        client: WorkloadCertificate | None = None,
        timeout: float = 10.0,
    ) -> list[str]:
        """The PEM chain for ``csr``. ``client`` presents that certificate (mTLS); ``token``
        is sent as ``authorization: Bearer``. The CA's verdicts become
        AuthenticationError / PermissionDeniedError / InvalidRequestError; anything else
        (unreachable, TLS failure, timeout) ControlPlaneError."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.root.encode("ascii"),
            private_key=client.key if client is not None else None,
            certificate_chain=client.chain_pem.encode("ascii") if client is not None else None,
        )
        options = [("grpc.ssl_target_name_override", self.server_name)]
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=int(ttl))
        try:
            async with grpc.aio.secure_channel(self.address, credentials, options) as channel:
                stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)  # type: ignore[no-untyped-call]
                response = await stub.CreateCertificate(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            error = _ERRORS.get(exc.code(), ControlPlaneError)
            detail = exc.details() or exc.code().name
            if error is ControlPlaneError:
                detail = f"CA {self.address}: {exc.code().name}: {detail}"
            raise error(detail) from None
        return list(response.cert_chain)
