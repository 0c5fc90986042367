"""The routing rules shipped for the quick start are valid and consistent with the project's
Bookinfo manifests: every host and subset they name exists (``pymesh analyze`` finds nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

import pymesh.samples.bookinfo.manifests as manifests
from pymesh.config import load_path
from pymesh.config.analyze import analyze

MANIFESTS = Path(manifests.__file__).parent
RULES = sorted((MANIFESTS.parent / "rules").glob("*.yaml"))


def test_there_are_rules_for_the_quick_start() -> None:
    assert {p.stem for p in RULES} >= {"reviews-all-v1", "reviews-jason-v2"}


@pytest.mark.parametrize("rule", RULES, ids=lambda p: p.stem)
def test_rule_is_consistent_with_bookinfo(rule: Path) -> None:
    mesh = [
        r
        for name in ("bookinfo.yaml", "destination-rule-all.yaml")
        for r in load_path(MANIFESTS / name).resources
    ]
    rules = load_path(rule).resources
    assert rules, f"{rule.name} holds no resource"
    # Bookinfo's own DestinationRule names subsets no pod carries (v2 of ratings and details,
    # as in Istio's sample): only findings about the rule itself count here.
    findings = [f for f in analyze([*mesh, *rules]) if f.resource in rules]
    assert [f"{f.type.code}: {f.message}" for f in findings] == []
