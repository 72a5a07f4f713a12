"""template.yaml as the tests read it: the offline SAM transform, and helpers to resolve and inspect
its resources, conditions and IAM statements.

Everything here runs offline: cfn-lint ships its schemas, and the SAM translator is given a stub
managed-policy loader, a fixed region and a socket that refuses to connect.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = ROOT / "template.yaml"
EVENTS_DIR = ROOT / "events"

PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}

NO_VALUE = object()

# AWS managed policies SAM attaches to function roles. They are the ONLY place where "*" resources
# are accepted, because AWS offers no narrower form:
#  - AWSLambdaBasicExecutionRole: SAM adds it to every function role (CloudWatch Logs writes).
#  - AWSXrayWriteOnlyAccess: added by `Tracing: Active`; xray:PutTraceSegments/PutTelemetryRecords
#    (and the sampling-rule reads the X-Ray SDK does) only exist on Resource "*".
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
}
# A customer managed key for the snapshot bucket (the SnapshotBucketKmsKeyArn parameter).
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


# ---------------------------------------------------------------------------
# Offline SAM transform
# ---------------------------------------------------------------------------
class StubManagedPolicyLoader:
    """Stands in for samtranslator's IAM-backed loader: resolves managed policy names without AWS."""

    POLICIES = {
        "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }

    def load(self) -> dict[str, str]:
        return dict(self.POLICIES)


def _refuse_network(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("the template tests must not use the network")


def _with_s3_code_uris(template: dict[str, Any]) -> dict[str, Any]:
    """Local CodeUri/ContentUri -> s3:// placeholders, as `sam package` would do (and cfn-lint does)."""
    template = copy.deepcopy(template)
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = f"s3://placeholder-bucket/{logical_id}.zip"
        if resource["Type"] == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = f"s3://placeholder-bucket/{logical_id}.zip"
    return template


def transform_template(sam: dict[str, Any], parameter_values: dict[str, Any] | None = None) -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setattr(socket.socket, "connect", _refuse_network)
        return transform(_with_s3_code_uris(sam), dict(parameter_values or {}), StubManagedPolicyLoader())




# ---------------------------------------------------------------------------
# Helpers over the transformed template
# ---------------------------------------------------------------------------
def resources_of_type(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in cfn["Resources"].items() if r["Type"] == type_}


def props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return cfn["Resources"][logical_id].get("Properties", {})


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def ref_target(node: Any) -> str | None:
    """Logical id named by {"Ref": x} or {"Fn::GetAtt": [x, ...]}, else None."""
    if isinstance(node, dict) and len(node) == 1:
        if "Ref" in node:
            return node["Ref"]
        if "Fn::GetAtt" in node:
            return node["Fn::GetAtt"][0]
    return None


def referenced_names(node: Any) -> set[str]:
    """Every resource/parameter name a value refers to (Ref, GetAtt, ${...} in Sub); pseudo params excluded."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                found.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                if isinstance(value, list):
                    found |= referenced_names(value[1])
            else:
                found |= referenced_names(value)
    elif isinstance(node, list):
        for item in node:
            found |= referenced_names(item)
    return found - PSEUDO_PARAMETERS


def parameter_values(template: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, str]:
    values = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
    values.update(overrides or {})
    return values


def evaluate_conditions(template: dict[str, Any], params: dict[str, str]) -> dict[str, bool]:
    raw = template.get("Conditions", {})
    cache: dict[str, bool] = {}

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return params[node["Ref"]]
        return node

    def ev(node: Any) -> bool:
        (fn, args), = node.items()
        if fn == "Condition":
            return cond(args)
        if fn == "Fn::Equals":
            return str(value(args[0])) == str(value(args[1]))
        if fn == "Fn::Not":
            return not ev(args[0])
        if fn == "Fn::And":
            return all(ev(a) for a in args)
        if fn == "Fn::Or":
            return any(ev(a) for a in args)
        raise AssertionError(f"unsupported condition function {fn}")

    def cond(name: str) -> bool:
        if name not in cache:
            cache[name] = ev(raw[name])
        return cache[name]

    return {name: cond(name) for name in raw}


def resolve(node: Any, conditions: dict[str, bool], params: dict[str, str]) -> Any:
    """Resolve Fn::If / parameter Refs / AWS::NoValue the way CloudFormation would for given inputs."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, when_true, when_false = node["Fn::If"]
            return resolve(when_true if conditions[name] else when_false, conditions, params)
        if set(node) == {"Ref"}:
            if node["Ref"] == "AWS::NoValue":
                return NO_VALUE
            if node["Ref"] in params:
                return params[node["Ref"]]
            return node
        out = {}
        for key, value in node.items():
            resolved = resolve(value, conditions, params)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out
    if isinstance(node, list):
        return [r for r in (resolve(i, conditions, params) for i in node) if r is not NO_VALUE]
    return node


def resolved_resources(cfn: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources CloudFormation would create for the given parameter values, intrinsics resolved."""
    params = parameter_values(cfn, overrides)
    conditions = evaluate_conditions(cfn, params)
    return {
        lid: resolve(r, conditions, params)
        for lid, r in cfn["Resources"].items()
        if "Condition" not in r or conditions[r["Condition"]]
    }


def statement_variants(statement: Any) -> list[dict[str, Any]]:
    """A statement, or both branches of a conditional (Fn::If) statement."""
    if isinstance(statement, dict) and set(statement) == {"Fn::If"}:
        _, a, b = statement["Fn::If"]
        return [v for branch in (a, b) for v in statement_variants(branch)]
    if statement == {"Ref": "AWS::NoValue"}:
        return []
    return [statement]


def role_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in role.get("Properties", {}).get("Policies", []):
        for policy_variant in statement_variants(policy):
            for statement in as_list(policy_variant["PolicyDocument"]["Statement"]):
                statements.extend(statement_variants(statement))
    return statements


def all_iam_statements(cfn: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Statements of every role plus every standalone IAM policy, keyed by resource id."""
    out = {lid: role_statements(r) for lid, r in resources_of_type(cfn, "AWS::IAM::Role").items()}
    for type_ in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for lid, r in resources_of_type(cfn, type_).items():
            out[lid] = [v for s in as_list(r["Properties"]["PolicyDocument"]["Statement"])
                        for v in statement_variants(s)]
    return out


def function_role(cfn: dict[str, Any], function_id: str) -> str:
    role = ref_target(props(cfn, function_id)["Role"])
    assert role in cfn["Resources"], f"{function_id} role is not a role of this stack"
    return role


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def assert_sse_queue(cfn: dict[str, Any], queue_ref: Any) -> str:
    queue_id = ref_target(queue_ref)
    assert queue_id in cfn["Resources"], f"{queue_ref} is not a queue of this stack"
    queue = cfn["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"].get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue["Properties"], (
        f"{queue_id} is not encrypted"
    )
    return queue_id


def snapshot_key_grants(cfn: dict[str, Any], overrides: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Role -> statements that grant anything on the snapshot bucket's KMS key parameter (KMS_KEY when given)."""
    grants = {}
    for logical_id, resource in resolved_resources(cfn, overrides).items():
        if resource["Type"] == "AWS::IAM::Role":
            found = [s for s in role_statements(resource)
                     if KMS_KEY in as_list(s.get("Resource")) or {"Ref": "SnapshotBucketKmsKeyArn"} in as_list(
                         s.get("Resource"))]
            if found:
                grants[logical_id] = found
    return grants
