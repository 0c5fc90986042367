"""The demo's "image registry": which local program stands in for a container image.

There are no containers in process mode, so a Deployment's image names the sample app that
runs in its place. Istio's own images are recognised (``examples-bookinfo-reviews-v2``,
``go-httpbin``, ``curlimages/curl``, ``proxyv2``, ``envoyproxy/ratelimit``), so Istio's
unchanged manifests start pods
too (``bookinfo-details-v2.yaml``, the mirroring task's two httpbin versions). The project's
manifests use ``pymesh/<name>`` images that the same patterns match.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

__all__ = ["KNOWN_IMAGES", "Role", "StandIn", "stand_in"]

#: what a pod with an image the demo does not know is told
KNOWN_IMAGES = (
    "Images the demo runs: examples-bookinfo-{productpage,details,reviews,ratings}-vN, "
    "(go-)httpbin, tcp-echo-server and Istio's echo app (testing/app) as apps; curl, sleep, "
    "fortio, netshoot and busybox as clients (their programs run with `pymesh exec`); "
    "proxyv2 as a gateway."
)


class Role(Enum):
    APP = "app"  # an app process and its sidecar
    CLIENT = "client"  # a sidecar only; ``pymesh exec`` runs commands in the pod
    GATEWAY = "gateway"  # a proxy in router mode, no app


@dataclass(frozen=True, slots=True)
class StandIn:
    """What runs for an image: ``module`` (``python -m``) with ``args``, or nothing."""

    role: Role
    module: str = ""
    args: tuple[str, ...] = ()
    #: set when the image is unknown: the pod runs its sidecar only, and says why
    warning: str = ""
    #: the app speaks no HTTP: it is ready once it accepts a connection (a TCP probe)
    tcp: bool = False
    #: the app's container port speaks gRPC (HTTP/2 only): a TCP probe, behind the sidecar
    grpc: bool = False
    #: the stand-in reads the container's own ``args``, as the image does
    container_args: bool = False

    def argv(
        self,
        host: str,
        port: int,
        values: Mapping[str, str] | None = None,
        container_args: Sequence[str] = (),
    ) -> list[str]:
        """The app's command line, listening on ``host:port``; ``{name}`` in ``args`` is
        filled from ``values`` (``config_dir``, ``config_map``: what the pod mounts), and the
        container's ``args`` follow when the stand-in reads them."""
        if not self.module:
            return []
        args = [arg.format_map(values or {}) for arg in self.args]
        if self.container_args:
            args += ["--", *container_args]
        return [sys.executable, "-m", self.module, "--host", host, "--port", str(port), *args]


_BOOKINFO = re.compile(r"examples-bookinfo-(productpage|details|reviews|ratings)-(v\d+)")
_HTTPBIN = re.compile(r"(^|/)(go-)?httpbin(:|$)")
_CLIENTS = re.compile(r"(^|/)(curl|sleep|curl-ssl|fortio|netshoot|busybox)(:|$)")
_GATEWAY = re.compile(r"(^|/)(proxyv2|proxy|gateway)(:|$)")
_RATELIMIT = re.compile(r"(^|/)envoyproxy/ratelimit(:|$)")
_TCP_ECHO = re.compile(r"(^|/)tcp-echo(-server)?(:|$)")
_ECHO = re.compile(r"(^|/)(testing/app|echo-server)(:|$)")
# Envoy's reference rate limit service reads the ConfigMap mounted into its pod: mixer's Rate
# Limit Service reads it from pilot's config directory instead, and answers on the same ports.
_RATELIMIT_ARGS = (
    "--grpc-port", "8081",
    "--ratelimit-config", "{config_dir}",
    "--ratelimit-config-map", "{config_map}",
)  # fmt: skip


def _version(labels: Mapping[str, str], default: str = "v1") -> str:
    return labels.get("version") or default


def stand_in(image: str, labels: Mapping[str, str]) -> StandIn:
    """The stand-in for a container ``image`` of a pod with ``labels``."""
    name = image.rsplit("@", 1)[0]
    if m := _BOOKINFO.search(name):
        service, version = m.groups()
        module = f"pymesh.samples.bookinfo.{service}"
        if service == "productpage":
            return StandIn(Role.APP, module)
        return StandIn(Role.APP, module, ("--version", version))
    if _RATELIMIT.search(name):
        return StandIn(Role.APP, "mixer.ratelimit", _RATELIMIT_ARGS)
    if _TCP_ECHO.search(name):
        # The sample's container arguments ("9000,9001,9002" "one") choose ports and prefix.
        return StandIn(Role.APP, "pymesh.samples.tcp_echo", tcp=True, container_args=True)
    if _ECHO.search(name):
        args = ("--container-port", "{container_port}")
        return StandIn(Role.APP, "pymesh.samples.echo", args, grpc=True, container_args=True)
    if _HTTPBIN.search(name):
        return StandIn(Role.APP, "pymesh.samples.httpbin", ("--version", _version(labels)))
    if _CLIENTS.search(name):
        return StandIn(Role.CLIENT)
    if _GATEWAY.search(name) or labels.get("istio") in ("ingressgateway", "egressgateway"):
        return StandIn(Role.GATEWAY)
    return StandIn(
        Role.CLIENT,
        warning=f"no app: the demo has no stand-in for image {image!r}, so the pod runs its "
        f"sidecar only. {KNOWN_IMAGES}",
    )
