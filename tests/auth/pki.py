"""Certificates for identity tests: CAs of the tests' own (a company root and an
intermediate under it, another mesh's root), CSRs of any shape, and ``openssl verify``."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from auth.ca import CaSettings, CertificateAuthority, SigningMaterial
from auth.pem import PrivateKey, chain_pem, key_pem

__all__ = [
    "company_ca",
    "csr_pem",
    "openssl_verify",
    "write_cacerts",
]


def _ca_cert(
    name: str,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    *,
    days: float = 365,
    start: datetime.datetime | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    now = start or datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def company_ca(
    name: str = "Example Corp", *, intermediate: bool = True, days: float = 365
) -> SigningMaterial:
    """A root (RSA, as company PKIs often are) and, by default, a mesh intermediate (EC)
    under it: what Istio's plug-in CA task builds with its Makefile."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _ca_cert(f"{name} Root CA", root_key, days=days)
    if not intermediate:
        return SigningMaterial(root, root_key, (root,))
    key = ec.generate_private_key(ec.SECP256R1())
    inter = _ca_cert(f"{name} mesh intermediate", key, (root, root_key), days=days)
    return SigningMaterial(inter, key, (inter, root))


def write_cacerts(directory: Path, material: SigningMaterial) -> Path:
    """Istio's cacerts layout for ``material``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_text(chain_pem([material.cert]))
    key = directory / "ca-key.pem"
    key.write_bytes(key_pem(material.key))
    key.chmod(0o600)
    (directory / "root-cert.pem").write_text(chain_pem([material.root]))
    (directory / "cert-chain.pem").write_text(chain_pem(material.chain))
    return directory


def csr_pem(
    key: PrivateKey | None = None,
    sans: list[x509.GeneralName] | None = None,
    *,
    uri: str | None = None,
) -> str:
    """A CSR signed by ``key`` (new P-256 if None) with ``sans`` (or the one ``uri``)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names = sans if sans is not None else [x509.UniformResourceIdentifier(uri or "")]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def openssl_verify(tmp: Path, root: str, chain: list[str] | tuple[str, ...]) -> str:
    """``openssl verify -CAfile root -untrusted <intermediates> leaf``: its output (raises
    AssertionError with it when the verdict is not OK)."""
    (tmp / "root.pem").write_text(root)
    (tmp / "leaf.pem").write_text(chain[0])
    args = ["openssl", "verify", "-CAfile", str(tmp / "root.pem")]
    intermediates = [c for c in chain[1:] if c.strip() != root.strip()]
    if intermediates:
        (tmp / "untrusted.pem").write_text("".join(intermediates))
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    done = subprocess.run([*args, str(tmp / "leaf.pem")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def signer(material: SigningMaterial, clock: float | None = None) -> CertificateAuthority:
    import time

    return CertificateAuthority(
        material, CaSettings(), (lambda: clock) if clock is not None else time.time
    )
