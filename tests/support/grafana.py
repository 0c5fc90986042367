"""Grafana dashboards as Grafana runs them, for checking their queries against a real
Prometheus: every panel's targets, with the template variables resolved the way Grafana does
(``query_result(...)`` run, the variable's regex applied to each result line, multi-value
selections as an escaped ``(a|b)`` regex) and ``$__rate_interval`` set."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Panel", "Query", "load_dashboard", "panels", "resolve_variables", "substitute"]

Query = Callable[[str], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[str, ...]


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[Panel]:
    """Every panel with Prometheus targets, rows' nested panels included."""

    def walk(items: Any) -> Iterator[Panel]:
        for p in items or ():
            exprs = tuple(
                t["expr"] for t in p.get("targets") or () if isinstance(t.get("expr"), str)
            )
            if exprs:
                yield Panel(p.get("title", ""), exprs)
            yield from walk(p.get("panels"))

    yield from walk(dashboard.get("panels"))


def substitute(expr: str, values: Mapping[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


def _result_line(sample: Mapping[str, Any]) -> str:
    """One line of Grafana's ``query_result``: ``name{l="v", ...} value timestamp``."""
    metric = dict(sample["metric"])
    name = metric.pop("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    ts, value = sample["value"]
    return f"{name}{{{labels}}} {value} {int(float(ts) * 1000)}"


def _regex_value(values: list[str]) -> str:
    # Grafana escapes regex characters for a PromQL string: a backslash written twice
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


async def resolve_variables(
    dashboard: Mapping[str, Any],
    query: Query,
    chosen: Mapping[str, str],
    rate_interval: str,
) -> dict[str, str]:
    """Values for every template variable, in dashboard order (later ones use earlier ones):
    ``chosen`` wins; otherwise a query variable gets all its values (``includeAll``) or its
    first, and a custom one all its options (multi) or its first."""
    values: dict[str, str] = {"__rate_interval": rate_interval, "datasource": "prometheus"}
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var.get("type") == "datasource":
            continue
        if name in chosen:
            values[name] = chosen[name]
            continue
        if var.get("type") == "custom":
            options = [o.strip() for o in str(var.get("query", "")).split(",") if o.strip()]
            picked = options if var.get("multi") else options[:1]
            values[name] = _regex_value(picked) if var.get("multi") else picked[0]
            continue
        text = var.get("query")
        text = text.get("query") if isinstance(text, Mapping) else text
        found: list[str] = []
        m = re.fullmatch(r"\s*query_result\((.*)\)\s*", str(text), re.S)
        lv = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", str(text), re.S)
        if m is not None:
            expr = m.group(1)
            pattern = re.compile(str(var.get("regex", "")).strip("/") or "(.*)")
            for sample in await query(substitute(expr, values)):
                hit = pattern.match(_result_line(sample))
                if hit and hit.group(1) not in found:
                    found.append(hit.group(1))
        elif lv is not None:
            expr, label = lv.group(1), lv.group(2)
            for sample in await query(substitute(expr, values)):
                value = sample["metric"].get(label)
                if value is not None and value not in found:
                    found.append(value)
        else:
            raise ValueError(f"variable {name}: unsupported query {text!r}")
        if not found:
            raise AssertionError(f"variable {name}: {expr!r} found no values")
        multi = var.get("multi") or var.get("includeAll")
        values[name] = _regex_value(sorted(found)) if multi else sorted(found)[0]
    return values
