"""The proxy's internal configuration model: frozen, typed, protobuf-free.

Everything the runtime reads comes from here; ``proxy.config.translate`` builds it from
Envoy v3 protos (bootstrap and xDS alike). The classes live in ``model_*`` modules by concern
and are all re-exported here; ``model_common`` states the conventions (bytes for compared
values, float seconds, fractions 0..1, Envoy's defaults).
"""

from __future__ import annotations

from proxy.config.model_bootstrap import *  # noqa: F403
from proxy.config.model_bootstrap import __all__ as _bootstrap_all
from proxy.config.model_cluster import *  # noqa: F403
from proxy.config.model_cluster import __all__ as _cluster_all
from proxy.config.model_common import *  # noqa: F403
from proxy.config.model_common import __all__ as _common_all
from proxy.config.model_http import *  # noqa: F403
from proxy.config.model_http import __all__ as _http_all
from proxy.config.model_listener import *  # noqa: F403
from proxy.config.model_listener import __all__ as _listener_all
from proxy.config.model_route import *  # noqa: F403
from proxy.config.model_route import __all__ as _route_all
from proxy.config.model_tls import *  # noqa: F403
from proxy.config.model_tls import __all__ as _tls_all

__all__ = [
    *_common_all,
    *_route_all,
    *_http_all,
    *_tls_all,
    *_listener_all,
    *_cluster_all,
    *_bootstrap_all,
]
