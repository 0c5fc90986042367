"""SPIFFE identities as Istio uses them: ``spiffe://<trust-domain>/ns/<namespace>/sa/<account>``.

The same identity is an AuthorizationPolicy *principal* without the scheme
(``cluster.local/ns/foo/sa/sleep``), and the ``source.principal`` / ``connection.uri_san``
telemetry and RBAC read from a peer certificate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SPIFFE_SCHEME", "SpiffeId"]

SPIFFE_SCHEME = "spiffe://"
# DNS-label-ish names, as Kubernetes allows for namespaces and service accounts.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise ValueError(f"bad trust domain {self.trust_domain!r}")
        names = (("namespace", self.namespace), ("service account", self.service_account))
        for what, value in names:
            if len(value) > 253 or not _NAME.match(value):
                raise ValueError(f"bad {what} {value!r}")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """``spiffe://td/ns/NS/sa/SA`` → SpiffeId; ValueError for anything else."""
        if not uri.startswith(SPIFFE_SCHEME):
            raise ValueError(f"{uri!r} is not a SPIFFE ID (spiffe://<trust-domain>/...)")
        trust_domain, _, path = uri[len(SPIFFE_SCHEME) :].partition("/")
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"{uri!r} is not an Istio workload ID (spiffe://<td>/ns/<ns>/sa/<sa>)")
        return cls(trust_domain.lower(), parts[1], parts[3])

    @property
    def uri(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """The AuthorizationPolicy form: ``<td>/ns/<ns>/sa/<sa>``."""
        return self.uri[len(SPIFFE_SCHEME) :]

    def __str__(self) -> str:
        return self.uri
