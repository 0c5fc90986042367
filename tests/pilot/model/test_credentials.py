from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pilot.model import credentials_from_text, load_credentials
from pymesh.errors import ValidationError

CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_kubernetes_tls_secret_and_istio_generic_form() -> None:
    text = f"""
apiVersion: v1
kind: Secret
metadata: {{name: web-cert, namespace: istio-system}}
type: kubernetes.io/tls
data: {{tls.crt: {b64(CERT)}, tls.key: {b64(KEY)}, ca.crt: {b64(CERT)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: generic}}
stringData: {{cert: cert-pem, key: key-pem}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: not-a-secret}}
data: {{tls.crt: x}}
---
apiVersion: v1
kind: Secret
metadata: {{name: opaque}}
data: {{password: {b64(b"hunter2")}}}
"""
    found = {c.name: c for c in credentials_from_text(text, "s.yaml")}
    assert set(found) == {"web-cert", "generic"}
    web = found["web-cert"]
    assert (web.namespace, web.cert_chain, web.private_key, web.ca_cert) == (
        "istio-system",
        CERT,
        KEY,
        CERT,
    )
    assert found["generic"].namespace == "default"
    assert (found["generic"].cert_chain, found["generic"].private_key) == (b"cert-pem", b"key-pem")


def test_bad_base64_is_a_validation_error() -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {tls.crt: '***'}\n"
    with pytest.raises(ValidationError, match="not base64"):
        credentials_from_text(text, "bad.yaml")


def test_load_credentials_walks_a_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cert.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: c}}\n"
        f"data: {{tls.crt: {b64(CERT)}, tls.key: {b64(KEY)}}}\n"
    )
    (tmp_path / "vs.yaml").write_text("kind: VirtualService\n")
    (tmp_path / ".hidden.yaml").write_text("kind: Secret\nmetadata: {name: h}\n")
    assert [c.name for c in load_credentials(tmp_path)] == ["c"]
