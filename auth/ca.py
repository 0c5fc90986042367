"""Pure signing: a CSR and the caller's proven identity in, a PEM chain out.

No I/O and no clock of its own (``clock`` is wall-clock seconds, passed in). Istio's shape
of a workload certificate: empty subject, one URI SAN (the SPIFFE ID, critical because the
subject is empty), digital signature + key encipherment, server and client auth, not a CA;
the chain returned is leaf first, then the signing CA's chain up to the root.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.pem import PrivateKey, cert_pem
from pymesh.errors import InvalidRequestError
from pymesh.identity import SpiffeId

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "CaSettings",
    "CertificateAuthority",
    "CertificateRequest",
    "SigningMaterial",
    "parse_csr",
]

DEFAULT_TTL = 24 * 3600.0
#: Istio's ``MAX_WORKLOAD_CERT_TTL`` default: 90 days.
MAX_TTL = 90 * 24 * 3600.0
#: Backdating absorbs small clock differences between the CA and the peers that verify; a
#: tenth of the lifetime at most, so that half life stays about half the requested TTL.
_BACKDATE = 60.0
_EC_CURVES = ("secp256r1", "secp384r1")
_RSA_BITS = (2048, 8192)


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    """The CA's signing certificate and key, and ``chain``: the signing certificate up to
    the root, both included (Istio's ``cert-chain.pem``; just the root when self-signed)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    @property
    def root_pem(self) -> str:
        return cert_pem(self.root)


@dataclass(frozen=True, slots=True)
class CaSettings:
    trust_domain: str = "cluster.local"
    default_ttl: float = DEFAULT_TTL
    max_ttl: float = MAX_TTL


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """A parsed, signature-checked CSR: its key and the SPIFFE IDs it asks for."""

    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    identities: tuple[SpiffeId, ...]


def _check_key(key: object) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES:
            raise InvalidRequestError(f"EC curve {key.curve.name} is not supported (P-256, P-384)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not _RSA_BITS[0] <= key.key_size <= _RSA_BITS[1]:
            raise InvalidRequestError(f"an RSA key of {key.key_size} bits is not accepted (2048+)")
        return key
    raise InvalidRequestError(f"key type {type(key).__name__} is not supported (ECDSA, RSA)")


def parse_csr(pem: str) -> CertificateRequest:
    """Check a PEM CSR: well-formed, self-signed by its key, an accepted key type, and only
    SPIFFE URI SANs. :class:`InvalidRequestError` says what is wrong."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode("utf-8"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidRequestError("the CSR is not a PEM certificate signing request") from None
    try:
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, InvalidSignature, x509.UnsupportedGeneralNameType):
        raise InvalidRequestError("the CSR cannot be read") from None
    if not valid:
        raise InvalidRequestError("the CSR signature does not verify")
    public_key = _check_key(key)
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidRequestError("the CSR has no subject alternative name") from None
    except (ValueError, x509.DuplicateExtension):
        raise InvalidRequestError("the CSR's extensions cannot be read") from None
    identities = []
    for name in sans:
        if not isinstance(name, x509.UniformResourceIdentifier):
            raise InvalidRequestError(
                f"SAN {name.value!r} is not a SPIFFE URI; workload certificates carry the "
                "SPIFFE ID only"
            )
        try:
            identities.append(SpiffeId.parse(name.value))
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
    if not identities:
        raise InvalidRequestError("the CSR asks for no SPIFFE ID")
    return CertificateRequest(public_key, tuple(identities))


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    return (
        hashes.SHA384()
        if isinstance(key, ec.EllipticCurvePrivateKey) and (key.curve.name == "secp384r1")
        else hashes.SHA256()
    )


class CertificateAuthority:
    """Signs workload certificates (and the CA's own serving certificate)."""

    __slots__ = ("clock", "material", "settings")

    def __init__(
        self,
        material: SigningMaterial,
        settings: CaSettings,
        clock: Callable[[], float],
    ) -> None:
        self.material = material
        self.settings = settings
        self.clock = clock

    @property
    def root_pem(self) -> str:
        return self.material.root_pem

    def lifetime(self, requested: float) -> float:
        """Seconds of validity for a requested TTL: the default for 0, capped by the max."""
        if requested < 0:
            raise InvalidRequestError(f"validity_duration {requested:.0f} is negative")
        ttl = requested or self.settings.default_ttl
        return min(ttl, self.settings.max_ttl)

    def sign_workload(
        self, request: CertificateRequest, identity: SpiffeId, ttl: float
    ) -> tuple[str, ...]:
        """The PEM chain for an authorized request: leaf, then the CA chain to the root."""
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)])
        leaf = self._issue(
            request.public_key,
            ttl,
            san,
            critical_san=True,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        return (cert_pem(leaf), *(cert_pem(c) for c in self.material.chain))

    def sign_server(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        dns_names: Sequence[str],
        ips: Sequence[str],
        ttl: float,
    ) -> tuple[str, ...]:
        """A TLS server certificate for the CA's own endpoint (istiod's DNS names and IPs)."""
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)
        leaf = self._issue(
            public_key,
            ttl,
            x509.SubjectAlternativeName(names),
            critical_san=True,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        )
        return (cert_pem(leaf), *(cert_pem(c) for c in self.material.chain))

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        ttl: float,
        san: x509.SubjectAlternativeName,
        *,
        critical_san: bool,
        usages: list[x509.ObjectIdentifier],
    ) -> x509.Certificate:
        signer = self.material.cert
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        # Never outlive the certificate that signs it: peers would refuse the chain.
        not_after = min(now + datetime.timedelta(seconds=ttl), signer.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(signer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=min(_BACKDATE, ttl / 10)))
            .not_valid_after(not_after)
            .add_extension(san, critical=critical_san)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        return builder.sign(self.material.key, _hash_for(self.material.key))
