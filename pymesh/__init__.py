"""pymesh: a service mesh in Python — the shared core (config model, identity, errors, CLI)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
