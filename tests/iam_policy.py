"""A small evaluator of IAM identity policies: does a role's policy allow one request, and by which statements.

Why not moto or an npm simulator alone (docs/iam.md, "How the roles are checked"): moto enforces IAM only
roughly (it ignores most conditions, authorizes SNS and Secrets Manager calls against "*" and S3's
DeleteObjects against the bucket), and an npm simulator would make `make test` need Node.js. The roles here
use a handful of IAM's features, and this module implements exactly those, the way the IAM documentation
describes them; anything else (an unknown condition operator, a policy variable) raises `CannotJudge`
rather than guess.

    Effect Allow/Deny; Action/NotAction (case-insensitive, * and ? wildcards); Resource/NotResource
    (case-sensitive, * and ? wildcards); Condition with the String*, Arn*, Bool and Null operators,
    their ...IfExists forms, and ForAnyValue:/ForAllValues: on multi-valued keys.

An explicit Deny wins; otherwise one matching Allow allows; otherwise the request is implicitly denied.
Resource policies (`evaluate_resource_policy`) are matched on their Principal too: "*", the principal's
ARN, or its account (the root ARN or the account id); a service principal never matches a role.
Policy variables (${aws:username}), NotPrincipal and the other policy types (permission boundaries, SCPs,
session policies) are not evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


class CannotJudge(Exception):
    """The policy uses something this evaluator does not implement: no answer is better than a guess."""


@dataclass(frozen=True)
class Request:
    """One authorization IAM makes: an action on a resource ARN, with the request's condition keys."""

    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict, hash=False, compare=False)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    allowed_by: tuple[int, ...] = ()  # indexes of the Allow statements that match
    denied_by: tuple[int, ...] = ()  # indexes of the Deny statements that match


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    if "${" in pattern:
        raise CannotJudge(f"policy variables are not evaluated: {pattern!r}")
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile(rf"\A{regex}\Z", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: * is any run of characters (also across ':' and '/'), ? is one character."""
    return _wildcard(pattern, ignore_case).match(value) is not None


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(matches(p, action, ignore_case=True) for p in as_list(statement["NotAction"]))
    return any(matches(p, action, ignore_case=True) for p in as_list(statement["Action"]))


def _resource_matches(statement: dict[str, Any], resource: str) -> bool:
    if "NotResource" in statement:
        return not any(matches(p, resource) for p in as_list(statement["NotResource"]))
    return any(matches(p, resource) for p in as_list(statement["Resource"]))


# operator -> (test one request value against one policy value, negated?)
_OPERATORS = {
    "StringEquals": (lambda actual, wanted: actual == wanted, False),
    "StringNotEquals": (lambda actual, wanted: actual == wanted, True),
    "StringEqualsIgnoreCase": (lambda actual, wanted: actual.lower() == wanted.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda actual, wanted: actual.lower() == wanted.lower(), True),
    "StringLike": (lambda actual, wanted: matches(wanted, actual), False),
    "StringNotLike": (lambda actual, wanted: matches(wanted, actual), True),
    "ArnEquals": (lambda actual, wanted: matches(wanted, actual), False),
    "ArnLike": (lambda actual, wanted: matches(wanted, actual), False),
    "ArnNotEquals": (lambda actual, wanted: matches(wanted, actual), True),
    "ArnNotLike": (lambda actual, wanted: matches(wanted, actual), True),
    "Bool": (lambda actual, wanted: actual.lower() == str(wanted).lower(), False),
}


def _condition_holds(operator: str, key: str, wanted: Any, context: dict[str, Any]) -> bool:
    qualifier, _, operator = operator.rpartition(":")
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise CannotJudge(f"condition qualifier {qualifier!r}")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    present = key in context
    if operator == "Null":  # "true": the key must be absent
        return (not present) == (str(wanted).lower() == "true")
    if operator not in _OPERATORS:
        raise CannotJudge(f"condition operator {operator!r} (on {key})")
    test, negated = _OPERATORS[operator]
    if not present:
        # A missing key: IfExists and negated operators hold (nothing to contradict them), the rest do not;
        # ForAllValues holds on an empty set of values.
        return if_exists or negated or qualifier == "ForAllValues"
    actual_values = [str(value) for value in as_list(context[key])]
    wanted_values = [str(value) for value in as_list(wanted)]

    def one(actual: str) -> bool:
        hit = any(test(actual, value) for value in wanted_values)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(actual) for actual in actual_values)
    if negated and qualifier == "":
        return all(one(actual) for actual in actual_values)  # none of the values may match
    return any(one(actual) for actual in actual_values)


def conditions_hold(statement: dict[str, Any], context: dict[str, Any]) -> bool:
    """Every operator, every key: all must hold (AND); the values under one key are alternatives (OR)."""
    return all(_condition_holds(operator, key, wanted, context)
               for operator, keys in statement.get("Condition", {}).items()
               for key, wanted in keys.items())


def statement_applies(statement: dict[str, Any], request: Request) -> bool:
    if "Principal" in statement or "NotPrincipal" in statement:
        raise CannotJudge("a statement with a Principal is a resource policy's, not an identity policy's")
    return (_action_matches(statement, request.action) and _resource_matches(statement, request.resource)
            and conditions_hold(statement, request.context))


def principal_matches(statement: dict[str, Any], principal_arn: str) -> bool:
    """Whether a resource policy statement names the principal (an IAM role or user ARN)."""
    if "NotPrincipal" in statement:
        raise CannotJudge("NotPrincipal")
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        raise CannotJudge(f"principal {principal!r}")
    account = principal_arn.split(":")[4]
    return any(name in ("*", principal_arn, account, f"arn:aws:iam::{account}:root")
               for name in as_list(principal.get("AWS", [])))


def _decide(statements: list[dict[str, Any]], applies) -> Decision:
    allows, denies = [], []
    for index, statement in enumerate(statements):
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise CannotJudge(f"statement {index} has Effect {effect!r}")
        if applies(statement):
            (allows if effect == "Allow" else denies).append(index)
    return Decision(allowed=bool(allows) and not denies, allowed_by=tuple(allows), denied_by=tuple(denies))


def evaluate(statements: list[dict[str, Any]], request: Request) -> Decision:
    """An identity policy's answer to a request."""
    return _decide(statements, lambda statement: statement_applies(statement, request))


def evaluate_resource_policy(statements: list[dict[str, Any]], request: Request, principal_arn: str) -> Decision:
    """A resource policy's answer to a request of `principal_arn`."""
    def applies(statement: dict[str, Any]) -> bool:
        bare = {key: value for key, value in statement.items() if key not in ("Principal", "Sid")}
        return principal_matches(statement, principal_arn) and statement_applies(bare, request)
    return _decide(statements, applies)


@dataclass(frozen=True)
class Grant:
    """One action pattern on one resource pattern of one Allow statement: the unit a grant is used in."""

    statement: int
    action: str
    resource: str


def grants(statements: list[dict[str, Any]]) -> list[Grant]:
    """Every (action, resource) pair the Allow statements name (NotAction/NotResource: CannotJudge)."""
    found = []
    for index, statement in enumerate(statements):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            raise CannotJudge(f"statement {index}: which grants of a NotAction/NotResource are used is not listed")
        found += [Grant(index, action, resource)
                  for action in as_list(statement["Action"]) for resource in as_list(statement["Resource"])]
    return found


def grant_used_by(grant: Grant, statements: list[dict[str, Any]], request: Request, decision: Decision) -> bool:
    """Whether an allowed request is allowed (also) through this action/resource pair of its statement."""
    return (decision.allowed and grant.statement in decision.allowed_by
            and matches(grant.action, request.action, ignore_case=True) and matches(grant.resource, request.resource)
            and conditions_hold(statements[grant.statement], request.context))
