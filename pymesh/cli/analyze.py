"""``pymesh analyze [-f FILE|DIR|-]``: istioctl-style checks across resources.

With ``-f`` the files alone are analysed, offline (no pilot needed); without, pilot analyses
the configuration it runs. Exit status 79 when an Error-level finding is reported (istioctl's
code for "analysis found problems at or above the failure threshold"), 1 for a failure to
analyse at all."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pymesh.cli.pilot_client import add_pilot_arguments, client_from_args, guarded, read_inputs

__all__ = ["FINDINGS_EXIT", "add_arguments", "run"]

FINDINGS_EXIT = 79


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", action="append", help="file, directory or -")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_pilot_arguments(parser)


def _offline(paths: list[str]) -> list[dict[str, Any]]:
    from pymesh.config import load_documents
    from pymesh.config.analyze import analyze

    resources: dict[tuple[str, str, str], Any] = {}
    # What ``apply`` would warn about (fields accepted but not enforced, unknown kinds) is
    # part of the analysis: a file that analyses clean must also apply without a warning.
    loaded: list[dict[str, Any]] = []
    for source, text in read_inputs(paths):
        result = load_documents(text, source)
        for res in result.resources:
            resources[res.key] = res
        loaded += [
            {"level": "Warning", "code": "", "resource": "", "text": f"Warning {w}"}
            for w in result.warnings
        ]
    return loaded + [
        {"level": f.level.value, "code": f.code, "resource": f.resource.ref, "text": str(f)}
        for f in analyze(resources.values())
    ]


def _run(args: argparse.Namespace) -> int:
    if args.filename:
        findings = _offline(args.filename)
        scope = ", ".join(args.filename)
    else:
        _, data = client_from_args(args).call("GET", "/analyze")
        findings = data.get("findings", [])
        scope = "the running configuration"
    if args.output == "json":
        print(json.dumps(findings, indent=2))
    elif findings:
        for f in findings:
            print(f["text"])
    else:
        print(f"\u2714 No validation issues found when analyzing {scope}.")
    return FINDINGS_EXIT if any(f["level"] == "Error" for f in findings) else 0


def run(args: argparse.Namespace) -> int:
    return guarded(_run, args)
