"""The sidecar injector's admission webhook (``pymesh injector``).

The API server POSTs an ``admission.k8s.io/v1`` AdmissionReview for each pod it creates in a
namespace the MutatingWebhookConfiguration selects (``istio-injection=enabled``); the answer
carries the same pod ``kube-inject`` makes, as a base64 JSONPatch. A review that cannot be
read, or a pod whose annotations cannot be honoured, is refused (``allowed: false`` with the
reason), so with ``failurePolicy: Fail`` the pod is not created without its sidecar; a pod
that opts out, or is already injected, is allowed unchanged.
"""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import structlog
from aiohttp import web

from pymesh.errors import ConfigError
from pymesh.inject.pod import InjectConfig, inject_pod
from pymesh.inject.workloads import json_patch

__all__ = ["InjectorServer", "review"]

log = structlog.get_logger(__name__)

_API = "admission.k8s.io/v1"


def _response(uid: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": _API, "kind": "AdmissionReview", "response": {"uid": uid, **fields}}


def review(body: object, cfg: InjectConfig) -> tuple[int, dict[str, Any]]:
    """(HTTP status, AdmissionReview answer) for one request body (already JSON-decoded)."""
    if not isinstance(body, dict) or body.get("kind") != "AdmissionReview":
        return 400, {"error": "expected an AdmissionReview"}
    if body.get("apiVersion") != _API:
        return 400, {"error": f"AdmissionReview {body.get('apiVersion')}: only {_API} is served"}
    request = body.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        return 400, {"error": "AdmissionReview without a request uid"}
    uid = str(request["uid"])
    kind = request.get("kind") or {}
    pod = request.get("object")
    if kind.get("kind") != "Pod" or not isinstance(pod, dict):
        return 200, _response(uid, allowed=True)
    # A pod made by a ReplicaSet has no name yet: the workload's name is its owner's.
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    workload = ""
    if owners and isinstance(owners[0], dict):
        workload = str(owners[0].get("name", "")).rsplit("-", 1)[0]
    try:
        result = inject_pod(pod, cfg, workload=workload)
    except ConfigError as exc:
        log.warning("injection refused", uid=uid, error=str(exc))
        return 200, _response(
            uid, allowed=False, status={"code": 400, "message": f"sidecar injection: {exc}"}
        )
    if result.skipped:
        return 200, _response(uid, allowed=True)
    patch = base64.b64encode(json.dumps(json_patch(pod, result.pod)).encode()).decode()
    answer = _response(uid, allowed=True, patchType="JSONPatch", patch=patch)
    if result.warnings:
        answer["response"]["warnings"] = list(result.warnings)
    return 200, answer


class InjectorServer:
    """``POST /inject`` over TLS (the API server accepts nothing else), ``GET /ready``."""

    def __init__(self, cfg: InjectConfig, context: ssl.SSLContext | None) -> None:
        self.cfg = cfg
        self.context = context
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/inject", self._inject)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def _inject(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        status, answer = review(body, self.cfg)
        return web.json_response(answer, status=status)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("injector listening", address=f"{host}:{self.port}")

    async def stop(self) -> None:
        await self._runner.cleanup()
