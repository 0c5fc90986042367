"""Every resource any generator test builds is also parsed by ``json_format.ParseDict``, and
the two messages must serialise to the same bytes: the push path's parser is checked on the
whole range of configurations these tests cover."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from pilot.generate import fastproto


@pytest.fixture(autouse=True)
def same_bytes_as_parse_dict(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    original = fastproto.parse
    checked = [0]

    def parse(body: Any, message: Any) -> Any:
        fast = original(body, message)
        slow = json_format.ParseDict(body, type(message)())
        assert fast.SerializeToString() == slow.SerializeToString(), body
        checked[0] += 1
        return fast

    monkeypatch.setattr(fastproto, "parse", parse)
    yield checked
