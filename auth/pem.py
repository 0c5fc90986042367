"""PEM in and out: certificates, chains, keys, and loading them into an ``ssl.SSLContext``."""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "PrivateKey",
    "cert_pem",
    "chain_pem",
    "key_pem",
    "load_cert_chain",
    "load_certs",
    "load_key",
    "write_private",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def chain_pem(certs: Iterable[x509.Certificate]) -> str:
    return "".join(cert_pem(c) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certs(data: bytes | str, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ValueError naming ``what`` when there is none."""
    raw = data.encode("ascii") if isinstance(data, str) else data
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError:
        raise ValueError(f"{what}: not a PEM certificate") from None
    return certs


def load_key(data: bytes, what: str) -> PrivateKey:
    """An unencrypted EC or RSA private key; the message never contains the key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{what}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{what}: only EC and RSA keys are supported")
    return key


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (0600), atomically: a reader never sees a
    partial file, and the key never exists with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_cert_chain(context: ssl.SSLContext, chain: Sequence[str] | str, key: bytes) -> None:
    """``SSLContext.load_cert_chain`` from PEM in memory (the ssl module reads files only):
    through a private temporary directory that is removed at once."""
    text = chain if isinstance(chain, str) else "".join(chain)
    with tempfile.TemporaryDirectory(prefix="pymesh-tls-") as tmp:
        chain_path = Path(tmp, "chain.pem")
        key_path = Path(tmp, "key.pem")
        chain_path.write_text(text, encoding="ascii")
        write_private(key_path, key)
        context.load_cert_chain(str(chain_path), str(key_path))
