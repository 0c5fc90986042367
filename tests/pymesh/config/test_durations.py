from __future__ import annotations

import pytest

from pymesh.config.durations import (
    format_duration,
    parse_duration,
    parse_duration_ns,
    to_seconds_nanos,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0.5s", 0.5),
        ("1m", 60.0),
        ("10ms", 0.01),
        ("1h30m", 5400.0),
        ("3m", 180.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("7s", 7.0),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
        ("1m0.5s", 60.5),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_is_exact_in_nanoseconds() -> None:
    assert parse_duration_ns("1.1s") == 1_100_000_000
    assert parse_duration_ns("-2ms") == -2_000_000


@pytest.mark.parametrize("text", ["", "s", "1", "1.5", "5 s", "1d", "1sm", "abc", "1s-2s", "-"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (60.0, "1m"), (3600.0, "1h"), (90.0, "90s"), (0.0, "0s"), (1e-6, "1us")],
)
def test_format_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_to_seconds_nanos() -> None:
    assert to_seconds_nanos(0.5) == (0, 500_000_000)
    assert to_seconds_nanos(180.0) == (180, 0)
    assert to_seconds_nanos(0.1) == (0, 100_000_000)
