"""The checked-in ``pymesh/proto/*_pb2*`` modules are what ``make proto`` generates from the
``.proto`` files beside them (edit the .proto, run ``make proto``, commit both)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_in_sync(tmp_path: Path) -> None:
    gen = _generator()
    gen.generate(tmp_path)
    produced = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert produced, "protoc produced nothing"
    for relative in produced:
        committed = ROOT / relative
        assert committed.is_file(), f"{relative} is not checked in: run `make proto`"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), (
            f"{relative} is out of date with its .proto: run `make proto`"
        )


def test_service_path_is_istios() -> None:
    from pymesh.proto import ca_pb2

    service = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"]
    assert service.full_name == "istio.v1.auth.IstioCertificateService"
    fields = {f.name: f.number for f in ca_pb2.IstioCertificateRequest.DESCRIPTOR.fields}
    assert fields == {"csr": 1, "validity_duration": 3, "metadata": 4}
    assert ca_pb2.IstioCertificateResponse.DESCRIPTOR.fields_by_name["cert_chain"].number == 1
