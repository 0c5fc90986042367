"""Where the CA's signing key and certificates live, in Istio's ``cacerts`` layout.

``ca-cert.pem`` (the signing certificate), ``ca-key.pem`` (its key), ``root-cert.pem`` (the
root of trust) and ``cert-chain.pem`` (signing certificate up to the root). Plug in an
intermediate issued by a company root by putting those four files in the directory; an empty
directory gets a self-signed root on first start, written in the same layout (key 0600) so
that a restart keeps the mesh's root of trust.
"""

from __future__ import annotations

import datetime
import itertools
import stat
from collections.abc import Callable
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from auth.ca import SigningMaterial
from auth.pem import PrivateKey, chain_pem, key_pem, load_certs, load_key, write_private
from pymesh.errors import ConfigError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CERT_CHAIN",
    "ROOT_CERT",
    "ROOT_TTL",
    "load_cacerts",
    "load_or_create",
    "self_signed_root",
]

log = structlog.get_logger(__name__)

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
#: Istio's self-signed root lives ten years.
ROOT_TTL = 10 * 365 * 24 * 3600.0


def self_signed_root(trust_domain: str, clock: Callable[[], float]) -> SigningMaterial:
    """A new root (ECDSA P-256, subject ``O=<trust domain>`` as Istio's self-signed root)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    now = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(seconds=ROOT_TTL))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SigningMaterial(cert, key, (cert,))


def _read(directory: Path, name: str) -> bytes:
    try:
        return (directory / name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{directory / name}: {exc.strerror}") from None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            assert cert.signature_hash_algorithm is not None
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )  # fmt: skip
        elif isinstance(key, ec.EllipticCurvePublicKey):
            assert cert.signature_hash_algorithm is not None
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        else:
            return False
    except InvalidSignature:
        return False
    return cert.issuer == issuer.subject


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return bool(cert.public_key() == key.public_key())


def load_cacerts(directory: Path, clock: Callable[[], float]) -> SigningMaterial:
    """Istio's plug-in layout, checked: the key is the signing certificate's, the signing
    certificate is a CA, the chain links it to ``root-cert.pem``, nothing has expired."""
    where = str(directory)
    key_path = directory / CA_KEY
    try:
        mode = key_path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{key_path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        log.warning("ca key readable by others", path=str(key_path), mode=oct(stat.S_IMODE(mode)))
    try:
        key = load_key(_read(directory, CA_KEY), str(key_path))
        cert = load_certs(_read(directory, CA_CERT), str(directory / CA_CERT))[0]
        root = load_certs(_read(directory, ROOT_CERT), str(directory / ROOT_CERT))[0]
        chain_file = directory / CERT_CHAIN
        chain = (
            load_certs(chain_file.read_bytes(), str(chain_file)) if chain_file.exists() else [cert]
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not _same_key(cert, key):
        raise ConfigError(f"{where}: {CA_KEY} is not the key of {CA_CERT}")
    if not _is_ca(cert):
        raise ConfigError(f"{where}: {CA_CERT} is not a CA certificate (basicConstraints CA:TRUE)")
    if chain[0] != cert:
        chain.insert(0, cert)
    if chain[-1] != root:
        chain.append(root)
    for child, parent in itertools.pairwise(chain):
        if not _signed_by(child, parent):
            raise ConfigError(
                f"{where}: {CERT_CHAIN} is broken: {child.subject.rfc4514_string()!r} is not "
                f"signed by {parent.subject.rfc4514_string()!r}"
            )
    if not _signed_by(root, root):
        raise ConfigError(f"{where}: {ROOT_CERT} is not a self-signed root")
    now = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    for c in chain:
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise ConfigError(
                f"{where}: {c.subject.rfc4514_string() or 'a certificate'} is not valid now "
                f"({c.not_valid_before_utc:%Y-%m-%d} to {c.not_valid_after_utc:%Y-%m-%d})"
            )
    return SigningMaterial(cert, key, tuple(chain))


def _write(directory: Path, material: SigningMaterial) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # The key first: a crash in between leaves no certificate without its key.
    write_private(directory / CA_KEY, key_pem(material.key))
    (directory / CA_CERT).write_text(chain_pem([material.cert]), encoding="ascii")
    (directory / ROOT_CERT).write_text(chain_pem([material.root]), encoding="ascii")
    (directory / CERT_CHAIN).write_text(chain_pem(material.chain), encoding="ascii")


def load_or_create(
    directory: Path, trust_domain: str, clock: Callable[[], float]
) -> tuple[SigningMaterial, bool]:
    """The CA in ``directory``; a new self-signed root when it holds none. Returns the
    material and whether it was created now. Half a layout is an error, never overwritten."""
    present = [n for n in (CA_CERT, CA_KEY, ROOT_CERT) if (directory / n).exists()]
    if len(present) == 3:
        return load_cacerts(directory, clock), False
    if present:
        missing = sorted({CA_CERT, CA_KEY, ROOT_CERT} - set(present))
        raise ConfigError(f"{directory}: incomplete cacerts, missing {', '.join(missing)}")
    material = self_signed_root(trust_domain, clock)
    _write(directory, material)
    log.info(
        "self-signed root created",
        directory=str(directory),
        trust_domain=trust_domain,
        serial=format(material.root.serial_number, "x"),
    )
    return material, True
