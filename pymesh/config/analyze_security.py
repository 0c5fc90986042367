"""Analyzer checks for AuthorizationPolicy and RequestAuthentication: policies that select no
workload, principals that name no known service account, and JWT conditions no
RequestAuthentication can satisfy. Like the other checks they judge only what the input shows:
with no workloads (or no ServiceAccounts) in a namespace, they stay quiet about it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pymesh.config._mesh_index import MeshIndex, WorkloadView
from pymesh.config.analyze import REFERENCED_RESOURCE_NOT_FOUND, Finding, Level, MessageType
from pymesh.config.model.common import LabelSelector, Resource
from pymesh.config.model.kube import ServiceAccount
from pymesh.config.model.security import AuthorizationPolicy, RequestAuthentication

__all__ = [
    "NO_MATCHING_WORKLOADS",
    "REQUEST_PRINCIPALS_WITHOUT_AUTHN",
    "SECURITY_CHECKS",
    "TARGET_REF_NOT_RUN",
    "policies_selecting_nothing",
    "request_principals_without_authn",
    "unknown_principals",
]

NO_MATCHING_WORKLOADS = MessageType(
    "IST0127",
    "NoMatchingWorkloadsFound",
    Level.WARNING,
    "No matching workloads for this resource with the following labels: {}",
)
#: pymesh's own codes.
REQUEST_PRINCIPALS_WITHOUT_AUTHN = MessageType(
    "PYM0002",
    "RequestPrincipalsWithoutRequestAuthentication",
    Level.WARNING,
    "{} needs a verified JWT, but no RequestAuthentication applies to the workloads this "
    "policy selects: requests carrying a token are refused by RBAC like those without one.",
)
TARGET_REF_NOT_RUN = MessageType(
    "PYM0003",
    "TargetRefPolicyNotApplied",
    Level.WARNING,
    "targetRef(s) selects Gateway API gateways and waypoints, which pymesh does not run: this "
    "policy applies to no proxy.",
)
_ROOT_NAMESPACE = "istio-system"


def _finding(kind: MessageType, r: Resource[Any], path: str | None, *args: object) -> Finding:
    return Finding(kind, kind.template.format(*args), r, path)


def _in_scope(r: Resource[Any], workloads: list[WorkloadView]) -> list[WorkloadView]:
    if r.namespace == _ROOT_NAMESPACE:
        return workloads
    return [w for w in workloads if w.namespace == r.namespace]


def _selected(selector: LabelSelector | None, scope: list[WorkloadView]) -> list[WorkloadView]:
    if selector is None:
        return scope
    return [w for w in scope if selector.matches(w.labels)]


def _policies(index: MeshIndex) -> Iterator[Resource[Any]]:
    yield from index.of(AuthorizationPolicy)
    yield from index.of(RequestAuthentication)


def policies_selecting_nothing(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """Policies whose selector matches none of the given workloads (IST0127), and targetRef
    policies, which no pymesh proxy runs (PYM0003)."""
    index, out = MeshIndex(resources), list[Finding]()
    for r in _policies(index):
        if r.spec.target_ref is not None or r.spec.target_refs:
            out.append(_finding(TARGET_REF_NOT_RUN, r, "spec.targetRef"))
            continue
        scope = _in_scope(r, index.workloads)
        selector = r.spec.selector
        if selector is None or not scope or _selected(selector, scope):
            continue
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))
        out.append(_finding(NO_MATCHING_WORKLOADS, r, "spec.selector", labels))
    return out


def _known_accounts(index: MeshIndex) -> dict[str, set[str]]:
    known: dict[str, set[str]] = {}
    for r in index.of(ServiceAccount):
        known.setdefault(r.namespace, set()).add(r.name)
    for w in index.workloads:
        if w.spec is not None:
            known.setdefault(w.namespace, set()).add(w.spec.service_account)
    return known


def unknown_principals(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """``principals`` (exact ``<trust domain>/ns/<ns>/sa/<sa>``) naming a service account that
    no ServiceAccount or workload of that namespace has (IST0101)."""
    index, out = MeshIndex(resources), list[Finding]()
    known = _known_accounts(index)
    for r in index.of(AuthorizationPolicy):
        for i, rule in enumerate(r.spec.rules or ()):
            for j, rule_from in enumerate(rule.from_ or ()):
                src = rule_from.source
                if src is None:
                    continue
                for field, values in (("principals", src.principals),
                                      ("notPrincipals", src.not_principals)):  # fmt: skip
                    for k, principal in enumerate(values):
                        parts = principal.split("/")
                        if "*" in principal or len(parts) != 5 or parts[1::2] != ["ns", "sa"]:
                            continue
                        namespace, account = parts[2], parts[4]
                        if namespace in known and account not in known[namespace]:
                            path = f"spec.rules[{i}].from[{j}].source.{field}[{k}]"
                            out.append(
                                _finding(
                                    REFERENCED_RESOURCE_NOT_FOUND,
                                    r,
                                    path,
                                    "service account",
                                    f"{namespace}/{account}",
                                )
                            )
    return out


def _uses_jwt(ap: AuthorizationPolicy) -> str | None:
    for rule in ap.rules or ():
        for rule_from in rule.from_ or ():
            src = rule_from.source
            if src is not None and (src.request_principals or src.not_request_principals):
                return "requestPrincipals"
        for cond in rule.when:
            if cond.key.startswith("request.auth."):
                return cond.key
    return None


def request_principals_without_authn(resources: Iterable[Resource[Any]]) -> list[Finding]:
    """ALLOW policies that require JWT attributes where no RequestAuthentication applies
    (PYM0002): with nothing to verify the token, every request is denied."""
    index, out = MeshIndex(resources), list[Finding]()
    authns = list(index.of(RequestAuthentication))
    for r in index.of(AuthorizationPolicy):
        attribute = _uses_jwt(r.spec)
        if attribute is None or r.spec.action.value != "ALLOW":
            continue
        scope = _in_scope(r, index.workloads)
        selected = _selected(r.spec.selector, scope)
        if not selected:
            continue  # policies_selecting_nothing reports it
        covered = any(
            ra.namespace in (_ROOT_NAMESPACE, w.namespace)
            and (ra.spec.selector is None or ra.spec.selector.matches(w.labels))
            for ra in authns
            for w in selected
        )
        if not covered:
            out.append(_finding(REQUEST_PRINCIPALS_WITHOUT_AUTHN, r, "spec.rules", attribute))
    return out


SECURITY_CHECKS: tuple[Callable[[Iterable[Resource[Any]]], list[Finding]], ...] = (
    policies_selecting_nothing,
    unknown_principals,
    request_principals_without_authn,
)
