"""Load a bootstrap in a short-lived child process and hand back the translated model.

Envoy's protobuf descriptors (``xds-protos``) cost ~16 MB of resident memory once imported,
and a proxy with a static bootstrap never needs them again after start-up. Parsing in a child
keeps them out of the data-plane process; the frozen model crosses over as a pickle.
"""

from __future__ import annotations

import copyreg
import pickle
import subprocess
import sys
from types import MappingProxyType
from typing import Any

from proxy.config.model import Bootstrap
from pymesh.errors import ConfigError

__all__ = ["load_bootstrap_isolated"]


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


def _reduce_mapping_proxy(m: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    # The type itself is not importable by name, so pickle a function that rebuilds it.
    return _mapping_proxy, (dict(m),)


def _register() -> None:
    copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


def load_bootstrap_isolated(path: str, *, timeout: float = 60.0) -> Bootstrap:
    """Like ``load_bootstrap(path)``; raises ConfigError with the loader's message."""
    _register()
    proc = subprocess.run(
        # Imported (not run as __main__) so pickled references resolve to this module.
        [sys.executable, "-c", _CHILD, path],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ConfigError(proc.stderr.decode(errors="replace").strip() or "bootstrap load failed")
    bootstrap = pickle.loads(proc.stdout)
    if not isinstance(bootstrap, Bootstrap):
        raise ConfigError("bootstrap loader returned something else than a Bootstrap")
    return bootstrap


def _main(argv: list[str]) -> int:
    from proxy.config.bootstrap import load_bootstrap

    _register()
    try:
        bootstrap = load_bootstrap(argv[0])
    except (ConfigError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.buffer.write(pickle.dumps(bootstrap, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


_CHILD = "import sys; from proxy.config.isolated import _main; sys.exit(_main(sys.argv[1:]))"
