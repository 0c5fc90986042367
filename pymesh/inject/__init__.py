"""Sidecar injection: :mod:`.pod` (the pure transform), :mod:`.workloads` (``kube-inject``
over manifests, and the JSONPatch the webhook answers with) and :mod:`.webhook` (the
admission server)."""
