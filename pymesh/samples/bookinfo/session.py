"""productpage's signed ``session`` cookie (the real app keeps the user in Flask's session).

The cookie is ``<base64url JSON>.<HMAC-SHA256>``; the secret is fixed by default, as in the
real app, so any number of productpage replicas accept each other's cookies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

__all__ = ["COOKIE_NAME", "DEFAULT_SECRET", "decode", "encode"]

COOKIE_NAME = "session"
DEFAULT_SECRET = b"pymesh-bookinfo-productpage"


def _sign(payload: str, secret: bytes) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def encode(user: str, secret: bytes) -> str:
    """The cookie value that carries ``user``."""
    raw = json.dumps({"user": user}, separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{payload}.{_sign(payload, secret)}"


def decode(value: str | None, secret: bytes) -> str | None:
    """The user a cookie value carries, or None when it is absent, forged or malformed."""
    if not value:
        return None
    payload, _, signature = value.partition(".")
    if not hmac.compare_digest(signature, _sign(payload, secret)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    user = data.get("user") if isinstance(data, dict) else None
    return user if isinstance(user, str) and user else None
