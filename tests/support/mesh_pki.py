"""Mesh certificates for TLS tests: a root made by pymesh's own CA code, and workload
certificates for any SPIFFE ID (valid, expired, or from a root of their own), written to
files when a configuration names files."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from auth.ca import CaSettings, CertificateAuthority, parse_csr
from auth.pem import key_pem, load_cert_chain
from auth.store import self_signed_root
from pymesh.identity import SpiffeId
from tests.auth.pki import csr_pem

__all__ = ["MeshPki", "WorkloadCert"]


@dataclass(frozen=True)
class WorkloadCert:
    chain: str  # PEM, leaf first, root last
    key: bytes  # PEM
    uri: str

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """``<name>.pem`` and ``<name>-key.pem`` in ``directory``."""
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_text(self.chain)
        key.write_bytes(self.key)
        key.chmod(0o600)
        return cert, key


class MeshPki:
    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        self.material = self_signed_root(trust_domain, time.time)

    @property
    def root_pem(self) -> str:
        return self.material.root_pem

    def write_root(self, directory: Path, name: str = "root-cert") -> Path:
        path = directory / f"{name}.pem"
        path.write_text(self.root_pem)
        return path

    def workload(
        self, namespace: str, service_account: str, *, ttl: float = 3600, at: float | None = None
    ) -> WorkloadCert:
        """A certificate for ``spiffe://<td>/ns/<ns>/sa/<sa>``; ``at`` backdates issuance
        (an ``at`` more than ``ttl`` ago gives an expired certificate)."""
        identity = SpiffeId(self.trust_domain, namespace, service_account)
        when = at if at is not None else time.time()
        ca = CertificateAuthority(self.material, CaSettings(self.trust_domain), lambda: when)
        key = ec.generate_private_key(ec.SECP256R1())
        request = parse_csr(csr_pem(key, uri=identity.uri))
        chain = ca.sign_workload(request, identity, ttl)
        return WorkloadCert("".join(chain), key_pem(key), identity.uri)

    def server_context(self, cert: WorkloadCert, *, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A TLS server presenting ``cert`` that requires a client certificate from this
        root (what a mesh sidecar's inbound does)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_cert_chain(context, cert.chain, cert.key)
        context.load_verify_locations(cadata=self.root_pem)
        context.verify_mode = ssl.CERT_REQUIRED
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context
