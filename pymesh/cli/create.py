"""``pymesh create namespace NS`` (kubectl's)."""

from pymesh.cli.namespaces import add_create_arguments as add_arguments
from pymesh.cli.namespaces import run_create as run

__all__ = ["add_arguments", "run"]
