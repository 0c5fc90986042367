"""Trace context and sampling, sans-I/O: what the differential test against Envoy
(tests/integration/test_tracing_differential.py) found, pinned case by case."""

from __future__ import annotations

import random

import pytest

from proxy.tracing.context import (
    InvalidContext,
    Propagation,
    extract,
    inject,
    new_id,
    sampling_hint,
)
from proxy.tracing.decision import TraceReason, decide, trace_reason

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"


def _h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_b3_multi_and_single_are_read_alike() -> None:
    multi = extract(_h(("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN),
                       ("x-b3-parentspanid", PARENT), ("x-b3-sampled", "1")))  # fmt: skip
    single = extract(_h(("b3", f"{TRACE}-{SPAN}-1-{PARENT}")))
    assert multi is not None and single is not None
    assert (multi.trace_id, multi.span_id, multi.parent_id, multi.sampled) == (
        single.trace_id, single.span_id, single.parent_id, single.sampled,
    )  # fmt: skip
    assert (multi.propagation, single.propagation) == (Propagation.B3_MULTI, Propagation.B3_SINGLE)


@pytest.mark.parametrize(
    "headers",
    [
        (("x-b3-traceid", "not-hex"), ("x-b3-spanid", SPAN)),
        (("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN[:10])),
        (("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-parentspanid", "zz")),
        (("b3", f"{TRACE}"),),
        (("b3", f"{TRACE}-{SPAN}-x"),),
        (("b3", f"{TRACE}-{SPAN}-1-{PARENT}-extra"),),
    ],
)
def test_b3_that_does_not_parse_leaves_the_request_untraced(
    headers: tuple[tuple[str, str], ...],
) -> None:
    with pytest.raises(InvalidContext):
        extract(_h(*headers))


def test_w3c_is_read_only_when_asked_and_after_b3() -> None:
    w3c = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert extract(_h(w3c)) is None
    found = extract(_h(w3c), w3c=True)
    assert found is not None and found.trace_id == "0af7651916cd43dd8448eb211c80319c"
    both = extract(_h(w3c, ("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)), w3c=True)
    assert both is not None and both.trace_id == TRACE
    # ... but its sampled flag counts when B3 carries none
    assert sampling_hint(_h(w3c, ("x-b3-traceid", TRACE)), w3c=True) is True
    assert extract(_h(("traceparent", "ff-" + "1" * 32 + "-" + "2" * 16 + "-01")), w3c=True) is None


def test_sampling_hints() -> None:
    assert sampling_hint(_h(("x-b3-sampled", "0"))) is False
    assert sampling_hint(_h(("b3", "0"))) is False
    assert sampling_hint(_h(("b3", f"{TRACE}-{SPAN}-d"))) is True
    assert sampling_hint(_h(("x-b3-flags", "1"))) is None  # debug alone samples nothing
    assert sampling_hint(_h()) is None


def test_inject_answers_in_the_format_asked() -> None:
    headers = _h(("b3", "0"), ("x-b3-flags", "1"))
    inject(headers, TRACE, SPAN, PARENT, True, Propagation.B3_SINGLE)
    assert dict(headers) == {b"b3": f"{TRACE}-{SPAN}-1-{PARENT}".encode(), b"x-b3-flags": b"1"}
    headers = _h(("x-b3-traceid", "old"), ("x-b3-parentspanid", "old"))
    inject(headers, TRACE[:16], SPAN, None, False, Propagation.B3_MULTI, w3c=True)
    assert dict(headers) == {
        b"x-b3-traceid": TRACE[:16].encode(),
        b"x-b3-spanid": SPAN.encode(),
        b"x-b3-sampled": b"0",
        b"traceparent": f"00-{'0' * 16}{TRACE[:16]}-{SPAN}-00".encode(),
    }


def test_ids_are_nonzero_hex() -> None:
    rng = random.Random(7)
    ids = {new_id(rng) for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 and int(i, 16) for i in ids)


# -- the decision kept in x-request-id ---------------------------------------------------------
def _decide(headers: list[tuple[bytes, bytes]], random_sampling: float) -> TraceReason:
    return decide(headers, client_sampling=1.0, random_sampling=random_sampling,
                  overall_sampling=1.0)  # fmt: skip


def test_random_sampling_hashes_the_request_id() -> None:
    # 0x00000f9f % 10000 == 3999: sampled at 40%, not at 39.99%
    rid = "00000f9f-0000-4000-8000-000000000000"
    headers = _h(("x-request-id", rid))
    assert _decide(headers, 0.3999) is TraceReason.NONE
    assert dict(headers)[b"x-request-id"] == rid.encode()
    assert _decide(headers, 0.4) is TraceReason.SAMPLED
    assert dict(headers)[b"x-request-id"] == b"00000f9f-0000-9000-8000-000000000000"


def test_a_reason_already_in_the_id_is_kept_and_client_ids_trace() -> None:
    headers = _h(("x-request-id", "ffffffff-2222-b333-8444-555555555555"))
    assert _decide(headers, 0.0) is TraceReason.CLIENT
    headers = _h(("x-request-id", "ffffffff-2222-4333-8444-555555555555"),
                 ("x-client-trace-id", "c"))  # fmt: skip
    assert _decide(headers, 0.0) is TraceReason.CLIENT
    assert trace_reason(dict(headers)[b"x-request-id"]) is TraceReason.CLIENT
    forced = _h(("x-request-id", "ffffffff-2222-4333-8444-555555555555"),
                ("x-envoy-force-trace", "1"))  # fmt: skip
    assert _decide(forced, 0.0) is TraceReason.FORCED
    assert _decide(_h(("x-request-id", "not-a-uuid")), 1.0) is TraceReason.NONE
    vetoed = _h(("x-request-id", "00000001-2222-4333-8444-555555555555"))
    assert decide(vetoed, client_sampling=1, random_sampling=1, overall_sampling=0) is (
        TraceReason.NONE
    )
