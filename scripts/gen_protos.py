"""Generate the Python modules of pymesh's own .proto files (``make proto``).

``python scripts/gen_protos.py [OUT_DIR]`` writes ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` beside each proto (or under OUT_DIR, with the same relative paths, which
is how the sync test compares them). Uses grpcio-tools' bundled protoc, pinned in
pyproject.toml so that the output is reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ("pymesh/proto/ca.proto", "pymesh/proto/echo.proto")


def generate(out: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(ROOT / proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
