"""The CA directory: a self-signed root on first start (key 0600, reused on restart), Istio's
cacerts plug-in layout checked before it is used, and the key never printed."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auth.store import load_or_create
from pymesh.errors import ConfigError
from tests.auth.pki import company_ca, write_cacerts


def test_self_signed_root_is_created_once_with_a_private_key(tmp_path: Path) -> None:
    first, created = load_or_create(tmp_path / "ca", "cluster.local", time.time)
    assert created
    key = tmp_path / "ca" / "ca-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert first.root.subject.rfc4514_string() == "O=cluster.local"
    again, created = load_or_create(tmp_path / "ca", "cluster.local", time.time)
    assert not created
    assert again.root == first.root


def test_key_stays_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create(tmp_path / "ca", "cluster.local", time.time)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ca" / "ca-key.pem").stat().st_mode) == 0o600


def test_plugged_in_intermediate_is_used(tmp_path: Path) -> None:
    material = company_ca()
    write_cacerts(tmp_path, material)
    loaded, created = load_or_create(tmp_path, "cluster.local", time.time)
    assert not created
    assert loaded.cert == material.cert
    assert loaded.root == material.root
    assert [c.subject for c in loaded.chain] == [c.subject for c in material.chain]


def _break(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d, o: _break(d, "ca-key.pem", o["key"]), "is not the key of ca-cert.pem"),
        (lambda d, o: _break(d, "cert-chain.pem", o["inter"] + o["other_root"]),
         "cert-chain.pem is broken"),
        (lambda d, o: _break(d, "root-cert.pem", o["other_root"]), "is broken"),
        (lambda d, o: (d / "root-cert.pem").unlink(), "missing root-cert.pem"),
        (lambda d, o: _break(d, "ca-cert.pem", "junk"), "not a PEM certificate"),
        (lambda d, o: _break(d, "ca-key.pem", "junk"), "not an unencrypted PEM private key"),
    ],
    ids=["wrong-key", "broken-chain", "other-root", "incomplete", "bad-cert", "bad-key"],
)  # fmt: skip
def test_bad_cacerts_are_refused_with_the_reason(tmp_path: Path, damage, message) -> None:
    from auth.pem import chain_pem, key_pem

    material = company_ca()
    other = company_ca("Other Corp")
    write_cacerts(tmp_path, material)
    parts = {
        "key": key_pem(other.key).decode(),
        "inter": chain_pem([material.cert]),
        "other_root": chain_pem([other.root]),
    }
    damage(tmp_path, parts)
    with pytest.raises(ConfigError, match=message):
        load_or_create(tmp_path, "cluster.local", time.time)


def test_expired_intermediate_is_refused(tmp_path: Path) -> None:
    write_cacerts(tmp_path, company_ca(days=1))
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).timestamp()
    with pytest.raises(ConfigError, match="is not valid now"):
        load_or_create(tmp_path, "cluster.local", lambda: later)


def test_a_leaf_is_not_a_ca(tmp_path: Path) -> None:
    from tests.support.certs import self_signed

    cert, key = self_signed("not-a-ca")
    (tmp_path / "ca-cert.pem").write_bytes(cert)
    (tmp_path / "root-cert.pem").write_bytes(cert)
    (tmp_path / "ca-key.pem").write_bytes(key)
    with pytest.raises(ConfigError, match="not a CA certificate"):
        load_or_create(tmp_path, "cluster.local", time.time)


def test_pymesh_ca_never_prints_the_key(tmp_path: Path) -> None:
    """Creating the root, printing it and minting a token log nothing secret."""
    argv = [sys.executable, "-m", "pymesh.cli.main", "--log-level", "debug", "ca"]
    outputs = []
    for extra in (["root"], ["token", "-n", "foo", "sleep"]):
        done = subprocess.run(
            [*argv, "--ca-dir", str(tmp_path / "ca"), *extra],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        outputs.append(done.stdout + done.stderr)
    assert "BEGIN CERTIFICATE" in outputs[0]
    assert outputs[1].count(".") >= 2  # a JWT
    for out in outputs:
        assert "PRIVATE KEY" not in out
    secret = (tmp_path / "ca" / "ca-key.pem").read_text()
    body = "".join(secret.splitlines()[1:-1])
    assert all(body[:40] not in out for out in outputs)
