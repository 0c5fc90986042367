"""Proxy configuration: the typed model, Envoy v3 translation, and the live snapshot.

* ``proxy.config.model`` -- frozen, protobuf-free dataclasses the runtime reads.
* ``proxy.config.bootstrap`` -- ``load_bootstrap(path)`` / ``bootstrap_from_dict(data, source)``.
* ``proxy.config.translate`` -- Envoy v3 protos (bootstrap or xDS) to the model.
* ``proxy.config.snapshot`` -- ``ProxySnapshot`` and the atomically swapped ``SnapshotHolder``.
"""
