"""Shared fixtures for the config tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pymesh.config._samples import SAMPLES


@pytest.fixture
def samples() -> Path:
    """The Istio samples directory; tests using it skip when it is absent."""
    if not SAMPLES.is_dir():
        pytest.skip(
            f"Istio samples not found at {SAMPLES.resolve()} (expected ../shared/istio-samples)"
        )
    return SAMPLES
