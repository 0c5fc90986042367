"""One registration per filter: the runtime's protobuf-free lookup agrees with the registry."""

from __future__ import annotations

import subprocess
import sys

from proxy.config.translate import default_registry
from proxy.filters import BUILTIN_TYPE_URLS, builtin_factories, builtin_factory_for


def test_builtin_type_urls_are_the_registrations() -> None:
    registry = default_registry()
    factories = builtin_factories()
    for name, url in BUILTIN_TYPE_URLS.items():
        entry = registry.by_name[name]
        assert entry.type_url == url
        assert entry.factory is factories[name]
        network = name.startswith("envoy.filters.network.")
        assert entry.network == network
        assert builtin_factory_for("any-name", url, network=network) is factories[name]
        assert builtin_factory_for(name, "", network=network) is factories[name]
        # A network read filter is no HTTP filter, nor the other way round.
        assert builtin_factory_for(name, url, network=not network) is None
    assert builtin_factory_for("example.unknown", "type.googleapis.com/x.Y") is None


def test_the_running_proxy_never_imports_the_protos() -> None:
    """A proxy with a static bootstrap (translated in a child process) builds its filter
    chains without Envoy's descriptors: they would cost ~16 MB of resident memory."""
    code = (
        "import sys, asyncio\n"
        "import proxy.server, proxy.sidecar, proxy.filters\n"
        "from proxy.config.model import Bootstrap\n"
        "proxy.server.ProxyServer(Bootstrap(), loop=asyncio.new_event_loop())\n"
        "loaded = [m for m in sys.modules if m.startswith(('google.protobuf', 'envoy.'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_filter_s_module_is_loaded_when_it_is_used() -> None:
    """A proxy that runs no security filter never loads them nor their JWT and crypto
    libraries (~16 MB of resident memory)."""
    code = (
        "import sys\n"
        "import proxy.server, proxy.sidecar\n"
        "from proxy.filters import builtin_factory_for\n"
        "for name in ('router', 'fault', 'cors', 'local_ratelimit'):\n"
        "    assert builtin_factory_for('envoy.filters.http.' + name, '') is not None\n"
        "heavy = ('proxy.filters.rbac', 'proxy.filters.jwt_authn', 'proxy.filters.ext_authz',\n"
        "         'proxy.security.jwt', 'proxy.security.rbac', 'jwt', 'grpc')\n"
        "loaded = [m for m in sys.modules if m.startswith(heavy)]\n"
        "assert not loaded, loaded\n"
        "assert builtin_factory_for('envoy.filters.http.jwt_authn', '') is not None\n"
        "assert 'proxy.filters.jwt_authn' in sys.modules and 'jwt' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
