"""A pod's identity agent (``pymesh agent``, Istio's pilot-agent): the files it reads and the
Unix socket it serves SDS on.

Unix socket paths are short (108 bytes), so sockets live under the temp dir, in one
directory per demo run (:func:`sds_root`). A process-mode pod's agent runs as the demo's
user: its socket sits in that directory (mode 0700), its token in the run directory.

A captured pod's agent runs in the pod's network namespace as the sidecar's uid (1337), as
pilot-agent runs in the ``istio-proxy`` container: the run directory is not that user's to
read, so the pod gets a directory of its own under the root, owned by uid 1337 and mode
0700, holding its token, the mesh root and the socket. The root directory is then mode 0711:
uid 1337 may pass through it to its own directory, but nobody may list it or enter
another pod's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from auth.pem import write_private
from auth.tokens import TokenIssuer, load_or_create_token_key
from pymesh.demo.layout import DemoLayout

__all__ = ["AgentFiles", "agent_files", "remove_pod_dir", "remove_sds_root", "sds_root"]


@dataclass(frozen=True, slots=True)
class AgentFiles:
    """What one agent reads (its service-account token, the mesh root) and where it serves."""

    token: Path
    root_cert: Path
    socket: Path


def sds_root(layout: DemoLayout) -> Path:
    """The directory of this demo's SDS sockets (named after the run directory, so that two
    demos never share one and a demo started again finds its own)."""
    digest = hashlib.sha256(str(layout.run_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"pymesh-sds-{digest}"


def _issue_token(layout: DemoLayout, path: Path, namespace: str, service_account: str) -> None:
    """A token for the service account, as the kubelet projects one into the pod."""
    issuer = TokenIssuer(load_or_create_token_key(layout.ca_dir), time.time)
    write_private(path, issuer.issue(namespace, service_account).encode("ascii"))


def agent_files(
    layout: DemoLayout, key: str, namespace: str, service_account: str, uid: int | None = None
) -> AgentFiles:
    """Write the token (and, for an agent running as ``uid``, a copy of the mesh root) and
    say where the agent's socket goes. ``uid`` None: the agent runs as the demo's user."""
    root = sds_root(layout)
    root.mkdir(mode=0o700, exist_ok=True)
    if uid is None:
        home = layout.run_dir / "identity" / key
        home.mkdir(parents=True, exist_ok=True)
        token = home / "token"
        _issue_token(layout, token, namespace, service_account)
        return AgentFiles(token, layout.ca_dir / "root-cert.pem", root / f"{key}.sock")
    # Search only: uid 1337 reaches its own directory by name, lists nothing.
    os.chmod(root, 0o711)
    home = root / key
    shutil.rmtree(home, ignore_errors=True)  # what a killed agent of this pod left
    home.mkdir(mode=0o700)
    token, root_cert = home / "token", home / "root-cert.pem"
    _issue_token(layout, token, namespace, service_account)
    shutil.copyfile(layout.ca_dir / "root-cert.pem", root_cert)
    for path in (home, token, root_cert):
        os.chown(path, uid, uid)
    os.chmod(root_cert, 0o600)
    return AgentFiles(token, root_cert, home / "socket")


def remove_pod_dir(layout: DemoLayout, key: str) -> None:
    """A stopped captured pod's directory: its token and socket go with it."""
    shutil.rmtree(sds_root(layout) / key, ignore_errors=True)


def remove_sds_root(layout: DemoLayout) -> None:
    """Every socket and pod directory of the demo (its end, or what a crash left)."""
    shutil.rmtree(sds_root(layout), ignore_errors=True)
