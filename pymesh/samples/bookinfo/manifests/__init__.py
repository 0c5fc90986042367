"""Kubernetes and Istio YAML for the sample mesh: what ``pymesh demo`` applies when it starts.

The files are the project's own, written to match Istio's samples object for object
(``bookinfo.yaml``, ``destination-rule-all.yaml``, ``bookinfo-gateway.yaml``, ``httpbin.yaml``,
``sleep.yaml``) plus the ingress gateway that ``istioctl install`` would create. Container
images name the stand-in the demo runs for them (see :mod:`pymesh.demo.images`).
"""

__all__: list[str] = []
