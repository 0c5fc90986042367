"""The injector webhook over real TLS with the AdmissionReviews the API server sends for
Bookinfo's Deployments: the JSONPatch it answers with makes exactly the pod ``kube-inject``
makes, and that pod passes ``kubernetes-validate``; bad reviews and bad annotations are
refused with a reason."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest

from pymesh.inject.pod import InjectConfig, inject_pod
from pymesh.inject.webhook import InjectorServer
from tests.pymesh.inject.admission import (
    admission_review,
    apply_patch,
    bookinfo_deployments,
    pod_from_deployment,
)
from tests.support.certs import self_signed

HOST = "127.0.11.100"
CFG = InjectConfig(image="registry.example/pymesh:0.1")


class Client:
    def __init__(self, url: str, ca: bytes) -> None:
        self.url = url
        self.ssl = ssl.create_default_context(cadata=ca.decode())

    async def post(self, body: object) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(self.url, data=json.dumps(body), ssl=self.ssl) as resp,
        ):
            return resp.status, await resp.json()


@pytest.fixture
async def injector(tmp_path: Path) -> AsyncIterator[Client]:
    cert, key = self_signed("istiod.istio-system.svc", HOST)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = InjectorServer(CFG, context)
    await server.start(HOST, 0)
    try:
        yield Client(f"https://{HOST}:{server.port}/inject", cert)
    finally:
        await server.stop()


@pytest.mark.parametrize("deployment", bookinfo_deployments(), ids=lambda d: d["metadata"]["name"])
async def test_webhook_patch_makes_the_kube_inject_pod(
    injector: Client, deployment: dict[str, Any]
) -> None:
    pod = pod_from_deployment(deployment)
    review = admission_review(pod)
    status, answer = await injector.post(review)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"] and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patched = apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    expected = inject_pod(pod, CFG, workload=deployment["metadata"]["name"]).pod
    assert patched == expected
    kubernetes_validate.validate(patched, kubernetes_validate.latest_version(), strict=True)
    env = {e["name"]: e.get("value") for e in patched["spec"]["containers"][-1]["env"]}
    assert env["WORKLOAD_NAME"] == deployment["metadata"]["name"]


async def test_opt_out_and_other_kinds_are_allowed_unchanged(injector: Client) -> None:
    pod = pod_from_deployment(bookinfo_deployments()[0])
    pod["metadata"]["annotations"] = {"sidecar.istio.io/inject": "false"}
    status, answer = await injector.post(admission_review(pod))
    assert status == 200 and answer["response"]["allowed"] is True
    assert "patch" not in answer["response"]
    review = admission_review(pod)
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    status, answer = await injector.post(review)
    assert status == 200 and answer["response"] == {
        "uid": review["request"]["uid"],
        "allowed": True,
    }


async def test_bad_annotation_is_refused_with_its_reason(injector: Client) -> None:
    pod = pod_from_deployment(bookinfo_deployments()[0])
    pod["metadata"]["annotations"] = {"traffic.sidecar.istio.io/excludeOutboundPorts": "all"}
    status, answer = await injector.post(admission_review(pod))
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "'all' is not a port number" in response["status"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "Pod"}, "expected an AdmissionReview"),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}, "only"),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}, "request uid"),
    ],
)
async def test_malformed_reviews_are_400(injector: Client, body: object, message: str) -> None:
    status, answer = await injector.post(body)
    assert status == 400 and message in answer["error"]
