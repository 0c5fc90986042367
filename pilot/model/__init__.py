"""The mesh state pilot generates from: mesh settings, the proxy asking, and the indexed
configuration of one push."""

from pilot.model.credentials import TlsCredential, credentials_from_text, load_credentials
from pilot.model.mesh import MeshConfig
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pilot.model.visibility import SidecarScope, exported_to

__all__ = [
    "MeshConfig",
    "ProxyNode",
    "PushContext",
    "SidecarScope",
    "TlsCredential",
    "credentials_from_text",
    "exported_to",
    "load_credentials",
]
