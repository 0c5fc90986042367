"""``pymesh label namespace NS KEY=VALUE|KEY- [--overwrite]`` (kubectl's)."""

from pymesh.cli.namespaces import add_label_arguments as add_arguments
from pymesh.cli.namespaces import run_label as run

__all__ = ["add_arguments", "run"]
