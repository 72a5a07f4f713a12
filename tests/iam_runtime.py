"""Running a function's handler under exactly its role from template.yaml, and judging every AWS call it made.

    stack = MotoStack(cfn, parameters, moto_endpoint)   # the resources the roles and environments name, in moto
    role = stack.roles["CollectorFunction"]             # its role's statements, resolved to moto's names and ARNs
    with stack.running_as(role, monkeypatch) as calls:  # its credentials (moto enforces IAM), its environment,
        handler(event, context)                         # and every botocore call recorded
    requests = judged_requests(calls, stack.keys)       # each call's IAM requests (KMS on the caller's behalf too)
    verdict = judge(role, requests, moto_refusals(calls))  # against the role's statements: missing, unused

Everything is generic over template.yaml: any AWS::Lambda::Function the transform yields is found, its role's
inline statements and environment are resolved (Ref, Fn::GetAtt, Fn::Sub) against resources created in moto
by type (DEPLOYERS), and any call is mapped to the IAM requests AWS would authorize (REQUESTS). A resource
type, or an AWS operation, this module does not know fails loudly with what to add, never passes unchecked.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.client
import botocore.loaders
import botocore.session
import requests
import sqlglot
from athena_stand_in import RecordingAthena
from iam_policy import CannotJudge, Grant, Request, as_list, evaluate, evaluate_resource_policy, grant_used_by, grants
from sqlglot import exp
from template_model import parameter_values, resolved_resources

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
PARTITION = "aws"
STACK_NAME = "kandji-snapshots-iam"
PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
          "AWS::StackName": STACK_NAME, "AWS::URLSuffix": "amazonaws.com"}

# moto authorizes these services' calls against the resource's ARN; every other service against "*"
# (moto/core/responses.py: only services with a `_determine_resource` pass one; S3 has its own).
MOTO_CHECKS_RESOURCES = {"s3", "sqs", "iam", "sts"}
# moto names the action it checks after the operation; IAM authorizes these operations as another action.
MOTO_ACTION_NAMES = {"sns:publish": ["sns:PublishBatch"]}  # IAM has no sns:PublishBatch: it is sns:Publish


class NotModelled(AssertionError):
    """Something the machinery would have to guess about: add it here rather than let it pass unchecked."""


# ---------------------------------------------------------------------------
# The functions and their roles, from the transformed template
# ---------------------------------------------------------------------------
@dataclass
class FunctionRole:
    function_id: str
    role_id: str
    template_statements: list[dict[str, Any]]  # conditions applied, intrinsics as written
    managed_policy_arns: list[str]
    template_environment: dict[str, Any]
    statements: list[dict[str, Any]] = field(default_factory=list)  # resolved to the moto stack's names
    environment: dict[str, str] = field(default_factory=dict)

    def grant_pairs(self, parameters: dict[str, str] | None = None) -> list[tuple[Grant, Grant]]:
        """Each grant resolved (to judge with) and as template.yaml writes it (a stable name for reports)."""
        pairs = []
        for grant in grants(self.statements):
            resolved = as_list(self.statements[grant.statement]["Resource"])
            written = as_list(self.template_statements[grant.statement]["Resource"])[resolved.index(grant.resource)]
            pairs.append((grant, Grant(grant.statement, grant.action, _template_text(written, parameters or {}))))
        return pairs

    def without(self, grant: Grant) -> FunctionRole:
        """This role less one grant (one action on one resource of one statement; resolved names)."""
        statements, written = [], []
        for index, (statement, template) in enumerate(zip(self.statements, self.template_statements)):
            if index != grant.statement:
                statements.append(statement)
                written.append(template)
                continue
            actions = [action for action in as_list(statement["Action"]) if action != grant.action]
            if actions:
                statements.append({**statement, "Action": actions})
                written.append({**template, "Action": actions})
            kept = [i for i, resource in enumerate(as_list(statement["Resource"])) if resource != grant.resource]
            if kept:
                statements.append({**statement, "Action": grant.action,
                                   "Resource": [as_list(statement["Resource"])[i] for i in kept]})
                written.append({**template, "Action": grant.action,
                                "Resource": [as_list(template["Resource"])[i] for i in kept]})
        return dataclasses.replace(self, statements=statements, template_statements=written)


def _template_text(node: Any, parameters: dict[str, str]) -> str:
    """A resource as template.yaml writes it; a parameter's value (resolved with the conditions) as ${Name}."""
    by_value = {value: name for name, value in parameters.items() if value.startswith("arn:")}
    if isinstance(node, str) and node in by_value:
        return "${%s}" % by_value[node]
    if isinstance(node, dict) and set(node) == {"Fn::Sub"}:
        return node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
    if isinstance(node, dict) and set(node) == {"Fn::GetAtt"}:
        return "${%s}" % ".".join(node["Fn::GetAtt"])
    if isinstance(node, dict) and set(node) == {"Ref"}:
        return "${%s}" % node["Ref"]
    return json.dumps(node) if not isinstance(node, str) else node


def function_roles(cfn: dict[str, Any], parameters: dict[str, str]) -> dict[str, FunctionRole]:
    """Every Lambda function the stack would create for these parameters, with its role's inline statements."""
    resources = resolved_resources(cfn, parameters)
    found = {}
    for function_id, function in resources.items():
        if function["Type"] != "AWS::Lambda::Function":
            continue
        role_ref = function["Properties"]["Role"]
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            raise NotModelled(f"{function_id}'s role is not a role of this stack: {role_ref}")
        role_id = role_ref["Fn::GetAtt"][0]
        role = resources[role_id]["Properties"]
        statements = [statement for policy in role.get("Policies", [])
                      for statement in as_list(policy["PolicyDocument"]["Statement"])]
        found[function_id] = FunctionRole(
            function_id, role_id, statements, list(role.get("ManagedPolicyArns", [])),
            dict(function["Properties"].get("Environment", {}).get("Variables", {})))
    return found


# ---------------------------------------------------------------------------
# The stack's resources in moto, created on demand by type
# ---------------------------------------------------------------------------
def _create_key(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    key = stack.client("kms").create_key(Description=f"{logical_id} of {STACK_NAME}")["KeyMetadata"]
    return {"Ref": key["KeyId"], "Arn": key["Arn"]}


def _create_bucket(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    name = f"{STACK_NAME}-{logical_id}".lower()
    s3 = stack.client("s3")
    s3.create_bucket(Bucket=name)
    encryption = stack.substitute(props.get("BucketEncryption"))
    if encryption:  # CloudFormation's shape -> the API's
        rules = [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                  **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {})}
                 for rule in encryption["ServerSideEncryptionConfiguration"]]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    return {"Ref": name, "Arn": f"arn:{PARTITION}:s3:::{name}"}


def _create_topic(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    attributes = {"KmsMasterKeyId": stack.substitute(props["KmsMasterKeyId"])} if "KmsMasterKeyId" in props else {}
    arn = stack.client("sns").create_topic(Name=logical_id, Attributes=attributes)["TopicArn"]
    return {"Ref": arn, "TopicArn": arn, "TopicName": logical_id}


def _create_secret(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    extra = {"KmsKeyId": stack.substitute(props["KmsKeyId"])} if "KmsKeyId" in props else {}
    arn = stack.client("secretsmanager").create_secret(Name=f"{STACK_NAME}/{logical_id}", **extra)["ARN"]
    return {"Ref": arn, "Id": arn}


def _create_queue(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=f"{STACK_NAME}-{logical_id}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"Ref": url, "Arn": arn, "QueueName": f"{STACK_NAME}-{logical_id}", "QueueUrl": url}


def _create_workgroup(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    """Known to the Athena stand-in (moto cannot serve Athena to this botocore), with its results location."""
    name = stack.substitute(props["Name"])
    results = props.get("WorkGroupConfiguration", {}).get("ResultConfiguration", {}).get("OutputLocation")
    stack.athena.workgroups[name] = stack.substitute(results) if results else ""
    return {"Ref": name, "Arn": f"arn:{PARTITION}:athena:{REGION}:{ACCOUNT}:workgroup/{name}"}


def _create_glue_database(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    """The database and every Glue table of the stack in it (Athena's on-behalf requests need their locations)."""
    glue = stack.client("glue")
    name = stack.substitute(props["DatabaseInput"]["Name"])
    glue.create_database(DatabaseInput={"Name": name})
    stack.physical[logical_id] = {"Ref": name}  # the tables name it
    for table in stack.resources.values():
        if table["Type"] == "AWS::Glue::Table" and table["Properties"]["DatabaseName"] == {"Ref": logical_id}:
            glue.create_table(DatabaseName=name, TableInput=stack.substitute(table["Properties"]["TableInput"]))
    return {"Ref": name}


def _role_name(stack: MotoStack, logical_id: str, props: dict[str, Any]) -> dict[str, str]:
    """A function's role, as resource policies name it: `credentials` creates it under this name."""
    return {"Ref": logical_id, "Arn": role_arn(logical_id)}


def role_arn(role_id: str) -> str:
    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{role_id}"


# Resource type -> how to create it in moto; returns its Ref and GetAtt values.
DEPLOYERS: dict[str, Callable[[MotoStack, str, dict[str, Any]], dict[str, str]]] = {
    "AWS::KMS::Key": _create_key,
    "AWS::S3::Bucket": _create_bucket,
    "AWS::SNS::Topic": _create_topic,
    "AWS::SecretsManager::Secret": _create_secret,
    "AWS::SQS::Queue": _create_queue,
    "AWS::Athena::WorkGroup": _create_workgroup,
    "AWS::Glue::Database": _create_glue_database,
    "AWS::IAM::Role": _role_name,
}

# Resource policy type -> (the property naming what it applies to, the property holding the document).
RESOURCE_POLICIES = {
    "AWS::SNS::TopicPolicy": ("Topics", "PolicyDocument"),
    "AWS::SQS::QueuePolicy": ("Queues", "PolicyDocument"),
    "AWS::S3::BucketPolicy": ("Bucket", "PolicyDocument"),
}


# One loader of botocore's service models for every stack of the test process: a new loader parses S3's model
# (and the others) again, a second or more of CPU each time.
_SERVICE_MODELS = botocore.loaders.create_loader()


class MotoStack:
    """The resources the functions' roles and environments name, created in moto, and the roles resolved."""

    def __init__(self, cfn: dict[str, Any], parameters: dict[str, str], moto_endpoint: str):
        self.parameters = parameter_values(cfn, parameters)
        self.resources = resolved_resources(cfn, parameters)
        self.endpoint = moto_endpoint
        self.physical: dict[str, dict[str, str]] = {}
        self._credentials: dict[str, dict[str, str]] = {}
        self._clients: dict[str, Any] = {}
        self.athena = RecordingAthena(workgroups={})  # answers the roles' Athena calls (docs/iam.md)
        self.keys = KeyLookup(self.client, self.athena.workgroups)
        self._policies = self._resource_policies_by_target()
        self.roles = function_roles(cfn, parameters)
        for role in self.roles.values():
            role.statements = self.substitute(role.template_statements)
            role.environment = {name: str(value) for name, value in self.substitute(role.template_environment).items()}

    def client(self, service: str) -> Any:
        """A client with the test's own credentials (made before any role's are in the environment)."""
        if service not in self._clients:
            self._clients[service] = boto3.client(service)
        return self._clients[service]

    # --- resolving intrinsics to the moto resources ------------------------------------------------
    def attribute(self, logical_id: str, attribute: str = "Ref") -> str:
        if logical_id in PSEUDO:
            return PSEUDO[logical_id]
        if logical_id in self.parameters and logical_id not in self.resources:
            return self.parameters[logical_id]
        if logical_id not in self.physical:
            resource = self.resources.get(logical_id)
            if resource is None:
                raise NotModelled(f"{logical_id} is neither a resource nor a parameter of the stack")
            deploy = DEPLOYERS.get(resource["Type"])
            if deploy is None:
                raise NotModelled(f"a function's role or environment names {logical_id} ({resource['Type']}): "
                                  "add how to create that type in moto to tests/iam_runtime.py DEPLOYERS")
            self.physical[logical_id] = deploy(self, logical_id, resource.get("Properties", {}))
        values = self.physical[logical_id]
        if attribute not in values:
            raise NotModelled(f"{logical_id}.{attribute} is not known: add it to its DEPLOYERS entry")
        return values[attribute]

    def substitute(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.substitute(item) for item in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return self.attribute(node["Ref"])
        if set(node) == {"Fn::GetAtt"}:
            logical_id, attribute = node["Fn::GetAtt"] if isinstance(node["Fn::GetAtt"], list) else \
                node["Fn::GetAtt"].split(".", 1)
            return self.attribute(logical_id, attribute)
        if set(node) == {"Fn::Sub"}:
            text, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
            variables = self.substitute(variables)

            def value(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in variables:
                    return str(variables[name])
                logical_id, _, attribute = name.partition(".")
                return self.attribute(logical_id, attribute or "Ref")

            return re.sub(r"\$\{([^}!]+)\}", value, text).replace("${!", "${")  # ${!x}: a literal ${x}
        if set(node) == {"Fn::Join"}:
            separator, items = node["Fn::Join"]
            return separator.join(str(item) for item in self.substitute(items))
        if set(node) == {"Fn::Base64"}:  # a view's Presto text
            return base64.b64encode(str(self.substitute(node["Fn::Base64"])).encode()).decode()
        if any(key.startswith("Fn::") for key in node):
            raise NotModelled(f"intrinsic {sorted(node)} in a function's role or environment: resolve it here")
        return {key: self.substitute(value) for key, value in node.items()}

    # --- resource policies --------------------------------------------------------------------------
    def _resource_policies_by_target(self) -> dict[str, list[Any]]:
        """Logical id -> the policy documents (as written) of the stack that apply to it, KMS key policies too."""
        found: dict[str, list[Any]] = {}
        for logical_id, resource in self.resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::KMS::Key":
                found.setdefault(logical_id, []).append(props["KeyPolicy"])
            elif resource["Type"] in RESOURCE_POLICIES:
                targets, document = RESOURCE_POLICIES[resource["Type"]]
                for target in as_list(props[targets]):
                    if isinstance(target, dict) and set(target) == {"Ref"} and target["Ref"] in self.resources:
                        found.setdefault(target["Ref"], []).append(props[document])
        return found

    def policies_on(self, resource_arn: str) -> tuple[bool, list[list[dict[str, Any]]]]:
        """(whether the resource is this stack's, the statements of each resource policy on it). An object's
        bucket policy applies to it; a KMS key of the stack has its key policy."""
        for logical_id, values in list(self.physical.items()):
            arns = {values.get("Arn"), values.get("Ref")} - {None}
            if resource_arn in arns or any(resource_arn.startswith(f"{arn}/") for arn in arns if ":s3:::" in arn):
                documents = self.substitute(self._policies.get(logical_id, []))
                return True, [as_list(document["Statement"]) for document in documents]
        return False, []

    # --- running under a role ------------------------------------------------------------------------
    def moto_statements(self, role: FunctionRole) -> list[dict[str, Any]]:
        """The role's statements as moto can enforce them (docs/iam.md): moto authorizes SNS, Secrets Manager
        and KMS calls against "*", so those statements name "*" here; and it authorizes S3's DeleteObjects
        against the bucket, so a DeleteObject grant names the bucket too; it checks PublishBatch as
        sns:PublishBatch, an action IAM does not have (sns:Publish authorizes it). The exact actions and
        resources are judged by `judge` against the statements as written."""
        adapted = []
        for statement in role.statements:
            statement = dict(statement)
            actions = as_list(statement.get("Action", []))
            statement["Action"] = [*actions, *(alias for action in actions
                                               for alias in MOTO_ACTION_NAMES.get(action.lower(), []))]
            if any(action.split(":")[0].lower() not in MOTO_CHECKS_RESOURCES for action in actions):
                statement["Resource"] = "*"
            elif any(action.lower() == "s3:deleteobject" for action in actions):
                buckets = {resource.split("/")[0] for resource in as_list(statement["Resource"])}
                statement["Resource"] = [*as_list(statement["Resource"]), *sorted(buckets)]
            adapted.append(statement)
        return adapted

    def credentials(self, role: FunctionRole) -> dict[str, str]:
        """Temporary credentials of a moto role with the function's statements (made once per stack)."""
        if role.role_id not in self._credentials:
            self._credentials[role.role_id] = self._assume(role)
        return self._credentials[role.role_id]

    def _assume(self, role: FunctionRole) -> dict[str, str]:
        iam = self.client("iam")
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        arn = iam.create_role(RoleName=role.role_id, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=role.role_id, PolicyName="inline", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": self.moto_statements(role)}))
        issued = self.client("sts").assume_role(RoleArn=arn, RoleSessionName=role.function_id)["Credentials"]
        return {"AWS_ACCESS_KEY_ID": issued["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": issued["SecretAccessKey"],
                "AWS_SESSION_TOKEN": issued["SessionToken"]}

    def _fresh_session(self) -> boto3.Session:
        """A session with no credentials resolved yet (it reads the role's from the environment), sharing one
        loader of service models: a new loader parses S3's model again, seconds per handler run."""
        session = botocore.session.get_session()
        session.register_component("data_loader", _SERVICE_MODELS)
        self.athena.serve(session)
        return boto3.Session(botocore_session=session)

    def enforce_iam(self, enforced: bool) -> None:
        """moto's switch (INITIAL_NO_AUTH_ACTION_COUNT, set through its API): 0 = check every request."""
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data="0" if enforced else "inf", timeout=10)

    @contextlib.contextmanager
    def running_as(self, role: FunctionRole, monkeypatch, extra_environment: dict[str, str] | None = None,
                   ) -> Iterator[list[Call]]:
        """The function's credentials and environment (as the template sets them), IAM enforced by moto, and
        every AWS call recorded, until the block ends."""
        from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

        role_credentials = self.credentials(role)  # made with the test's own credentials, IAM not enforced yet
        calls: list[Call] = []
        with monkeypatch.context() as patch:
            for other in self.roles.values():  # no setting of another function leaks in
                for name in other.environment:
                    patch.delenv(name, raising=False)
            for name, value in {**role.environment, **role_credentials, **(extra_environment or {})}.items():
                patch.setenv(name, value)
            patch.setattr(boto3, "DEFAULT_SESSION", self._fresh_session())  # clients made now sign as the role
            DEFAULT_PROVIDERS.clear()  # Powertools' cached Secrets Manager client, likewise
            patch.setattr(botocore.client.BaseClient, "_make_api_call", _recording(calls))
            self.enforce_iam(True)
            try:
                yield calls
            finally:
                self.enforce_iam(False)
                DEFAULT_PROVIDERS.clear()


# ---------------------------------------------------------------------------
# Recording the calls
# ---------------------------------------------------------------------------
@dataclass
class Call:
    service: str  # the IAM service prefix (botocore's signing name: s3, sns, secretsmanager, ...)
    operation: str
    params: dict[str, Any]
    error_code: str | None = None  # the AWS error, when the call failed
    response: dict[str, Any] | None = None

    def __str__(self) -> str:
        target = self.params.get("Key") or self.params.get("Prefix") or self.params.get("TopicArn") or \
            self.params.get("SecretId") or ""
        return f"{self.service}:{self.operation} {target}".strip()


def _recording(calls: list[Call]):
    original = botocore.client.BaseClient._make_api_call

    def make_api_call(client, operation_name, api_params):
        model = client.meta.service_model
        call = Call(model.signing_name or model.endpoint_prefix, operation_name, dict(api_params))
        calls.append(call)
        try:
            call.response = original(client, operation_name, api_params)
        except botocore.exceptions.ClientError as error:
            call.error_code = error.response.get("Error", {}).get("Code")
            raise
        return call.response

    return make_api_call


# ---------------------------------------------------------------------------
# Each call's IAM requests (what AWS authorizes for it), including the ones a service makes on the caller's
# behalf: KMS for an encrypted topic, bucket or secret.
# ---------------------------------------------------------------------------
def _key_arn(key: str | None) -> str | None:
    """A customer managed key's ARN; None for no key or an AWS managed key (alias/aws/...), which IAM
    policies need not grant (their key policies admit the account's principals through the service)."""
    if not key or key.startswith("alias/aws/"):
        return None
    if key.startswith("arn:"):
        return key
    return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{key}"


class KeyLookup:
    """Which customer managed KMS key a bucket, topic or secret of the stack uses, where a Glue table keeps its
    files and where a workgroup writes its results (asked of moto once each)."""

    def __init__(self, client: Callable[[str], Any], results_locations: dict[str, str] | None = None):
        self._client = client
        self.results_locations = results_locations if results_locations is not None else {}
        self._cache: dict[tuple[str, str], Any] = {}

    def _once(self, kind: str, name: str, ask: Callable[[], Any]) -> Any:
        if (kind, name) not in self._cache:
            self._cache[(kind, name)] = ask()
        return self._cache[(kind, name)]

    def bucket(self, bucket: str) -> tuple[str | None, bool]:
        """The bucket's default SSE-KMS key and whether it uses an S3 Bucket Key; (None, False) for SSE-S3."""
        def ask() -> tuple[str | None, bool]:
            try:
                rules = self._client("s3").get_bucket_encryption(Bucket=bucket)[
                    "ServerSideEncryptionConfiguration"]["Rules"]
            except botocore.exceptions.ClientError:
                return None, False
            default = rules[0].get("ApplyServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") != "aws:kms":
                return None, False
            return _key_arn(default.get("KMSMasterKeyID")), bool(rules[0].get("BucketKeyEnabled"))
        return self._once("bucket", bucket, ask)

    def topic(self, topic_arn: str) -> str | None:
        return self._once("topic", topic_arn, lambda: _key_arn(
            self._client("sns").get_topic_attributes(TopicArn=topic_arn)["Attributes"].get("KmsMasterKeyId")))

    def glue_table(self, database: str, table: str) -> dict[str, Any]:
        return self._once("glue table", f"{database}.{table}", lambda: self._client("glue").get_table(
            DatabaseName=database, Name=table)["Table"])

    def secret(self, secret_id: str) -> tuple[str, str | None]:
        """The secret's ARN and key."""
        def ask() -> tuple[str, str | None]:
            secret = self._client("secretsmanager").describe_secret(SecretId=secret_id)
            return secret["ARN"], _key_arn(secret.get("KmsKeyId"))
        return self._once("secret", secret_id, ask)


def _s3_kms(keys: KeyLookup, bucket: str, key: str, action: str) -> list[Request]:
    kms_key, bucket_key = keys.bucket(bucket)
    if kms_key is None:
        return []
    # With an S3 Bucket Key the encryption context is the bucket's ARN, otherwise the object's.
    context_arn = f"arn:{PARTITION}:s3:::{bucket}" + ("" if bucket_key else f"/{key}")
    return [Request(action, kms_key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com",
                                      "kms:EncryptionContext:aws:s3:arn": context_arn})]


def _object(call: Call, keys: KeyLookup, action: str) -> list[Request]:
    bucket, key = call.params["Bucket"], call.params["Key"]
    found = [Request(action, f"arn:{PARTITION}:s3:::{bucket}/{key}")]
    kms_action = "kms:GenerateDataKey" if action == "s3:PutObject" else "kms:Decrypt"
    if action in ("s3:PutObject", "s3:GetObject") and call.error_code is None:
        found += _s3_kms(keys, bucket, key, kms_action)
    if call.error_code in ("NoSuchKey", "404"):
        # S3 answers "no such key" only to a caller that may list the bucket, otherwise AccessDenied (which the
        # code does not take for "absent"); it checks the listing with the key as s3:prefix (docs/iam.md).
        found.append(Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": key}))
    return found


def _list(call: Call, keys: KeyLookup) -> list[Request]:
    context = {"s3:prefix": call.params["Prefix"]} if "Prefix" in call.params else {}
    if "Delimiter" in call.params:
        context["s3:delimiter"] = call.params["Delimiter"]
    return [Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{call.params['Bucket']}", context)]


def _delete_objects(call: Call, keys: KeyLookup) -> list[Request]:
    # One request, but S3 authorizes s3:DeleteObject on each key.
    return [Request("s3:DeleteObject", f"arn:{PARTITION}:s3:::{call.params['Bucket']}/{item['Key']}")
            for item in call.params["Delete"]["Objects"]]


def _publish(call: Call, keys: KeyLookup) -> list[Request]:
    topic = call.params.get("TopicArn") or call.params.get("TargetArn")
    found = [Request("sns:Publish", topic)]
    key = keys.topic(topic)
    if key:  # SNS encrypts with the publisher's permissions on the topic's key
        via = {"kms:ViaService": f"sns.{REGION}.amazonaws.com"}
        found += [Request("kms:GenerateDataKey", key, via), Request("kms:Decrypt", key, via)]
    return found


def _get_secret(call: Call, keys: KeyLookup) -> list[Request]:
    arn, key = keys.secret(call.params["SecretId"])
    found = [Request("secretsmanager:GetSecretValue", arn)]
    if key:
        found.append(Request("kms:Decrypt", key, {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com",
                                                  "kms:EncryptionContext:SecretARN": arn}))
    return found


def _glue_arns(database: str, table: str | None = None) -> list[str]:
    """A Glue call on a table is authorized on the table and its ancestors: the catalog and the database."""
    base = f"arn:{PARTITION}:glue:{REGION}:{ACCOUNT}"
    return [f"{base}:catalog", f"{base}:database/{database}"] + ([f"{base}:table/{database}/{table}"] if table else [])


def _glue_on_table(action: str):
    def requests_of_call(call: Call, keys: KeyLookup) -> list[Request]:
        return [Request(action, arn) for arn in _glue_arns(call.params["DatabaseName"], call.params["TableName"])]
    return requests_of_call


def _workgroup_arn(workgroup: str) -> str:
    return f"arn:{PARTITION}:athena:{REGION}:{ACCOUNT}:workgroup/{workgroup}"


def _s3_location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _start_query(call: Call, keys: KeyLookup) -> list[Request]:
    found = [Request("athena:StartQueryExecution", _workgroup_arn(call.params["WorkGroup"]))]
    if call.error_code is None:
        found += _query_on_behalf(call.params["QueryString"], call.params["QueryExecutionContext"]["Database"],
                                  keys.results_locations[call.params["WorkGroup"]], call.response["QueryExecutionId"],
                                  keys)
    return found


def _query_on_behalf(sql: str, database: str, results: str, query_id: str, keys: KeyLookup) -> list[Request]:
    """What Athena asks with the caller's permissions to run an `INSERT INTO ... SELECT` (no API call shows it):
    the Glue tables it reads and writes (and their ancestors), the partition it registers, the files it reads
    (those a `"$path" IN (...)` names, else every file of the partition it lists), the files it writes into the
    partition the WHERE names, the buckets it locates, the result manifest it writes; KMS for an SSE-KMS bucket."""
    statement = sqlglot.parse_one(sql, read="athena")
    if not isinstance(statement, exp.Insert):
        raise NotModelled(f"Athena's on-behalf requests are modelled for INSERT INTO ... SELECT only: {sql[:80]}")
    written = statement.this.find(exp.Table).name
    read = sorted({table.name for table in statement.expression.find_all(exp.Table)})
    equal_to = {column.name: literal.this for eq in statement.expression.find_all(exp.EQ)
                for column, literal in [(eq.this, eq.expression)]
                if isinstance(column, exp.Column) and isinstance(literal, exp.Literal) and literal.is_string}
    found = [Request("glue:GetDatabase", arn) for arn in _glue_arns(database)]
    found += [Request("glue:GetTable", arn) for table in [written, *read] for arn in _glue_arns(database, table)]
    found += [Request(action, arn) for action in ("glue:GetPartition", "glue:BatchCreatePartition")
              for arn in _glue_arns(database, written)]
    aliases = {table.alias_or_name: table.name for table in statement.expression.find_all(exp.Table)}
    paths: dict[str, list[str]] = {}  # table -> the files a "$path" IN (...) restricts it to
    for node in statement.expression.find_all(exp.In):
        if isinstance(node.this, exp.Column) and node.this.name == "$path":
            table = aliases.get(node.this.table) or (read[0] if len(read) == 1 else None)
            if table is None:
                raise NotModelled(f'a "$path" list of no single table in {sql[:80]}')
            paths.setdefault(table, []).extend(literal.this for literal in node.expressions)
    buckets = set()
    for table in read:  # Athena lists the partition the WHERE names and opens its files, or those "$path" names
        location = keys.glue_table(database, table)
        uri = location.get("Parameters", {}).get("storage.location.template") or \
            location["StorageDescriptor"]["Location"]
        for name, value in equal_to.items():  # a projected table's partition, from the WHERE
            uri = uri.replace("${%s}" % name, value)
        if "${" in uri:
            raise NotModelled(f"the partition of {table} the query reads is not named by an equality: {uri}")
        bucket, prefix = _s3_location(uri)
        buckets.add(bucket)
        found.append(Request("s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}", {"s3:prefix": prefix}))
        for path in paths.get(table) or [f"s3://{bucket}/{prefix}*"]:  # "*": every file listed there
            bucket, key = _s3_location(path)
            buckets.add(bucket)
            found += [Request("s3:GetObject", f"arn:{PARTITION}:s3:::{bucket}/{key}"),
                      *_s3_kms(keys, bucket, key, "kms:Decrypt")]
    target = keys.glue_table(database, written)
    keys_named = [column["Name"] for column in target.get("PartitionKeys", [])]
    if not set(keys_named) <= set(equal_to):
        raise NotModelled(f"the partition of {written} the query writes is not named by equalities on {keys_named}")
    partition = "".join(f"{name}={equal_to[name]}/" for name in keys_named)
    bucket, prefix = _s3_location(target["StorageDescriptor"]["Location"])
    buckets.add(bucket)
    data_file = f"{prefix}{partition}{query_id}_bucket-00000"  # Athena's name for a bucketed file; any name here
    found += [Request("s3:PutObject", f"arn:{PARTITION}:s3:::{bucket}/{data_file}"),
              *_s3_kms(keys, bucket, data_file, "kms:GenerateDataKey")]
    results_bucket, results_prefix = _s3_location(results)
    buckets.add(results_bucket)
    manifest = f"{results_prefix}tables/{query_id}-manifest.csv"  # the files an INSERT wrote, listed by Athena
    found += [Request("s3:PutObject", f"arn:{PARTITION}:s3:::{results_bucket}/{manifest}"),
              *_s3_kms(keys, results_bucket, manifest, "kms:GenerateDataKey")]
    found += [Request("s3:GetBucketLocation", f"arn:{PARTITION}:s3:::{name}") for name in sorted(buckets)]
    return found


def _get_query(call: Call, keys: KeyLookup) -> list[Request]:
    if call.response is None:
        raise NotModelled(f"{call}: a failed GetQueryExecution does not say its workgroup")
    return [Request("athena:GetQueryExecution", _workgroup_arn(call.response["QueryExecution"]["WorkGroup"]))]


# (IAM service prefix, operation) -> the IAM requests AWS authorizes for one call.
REQUESTS: dict[tuple[str, str], Callable[[Call, KeyLookup], list[Request]]] = {
    ("s3", "PutObject"): lambda call, keys: _object(call, keys, "s3:PutObject"),
    ("s3", "GetObject"): lambda call, keys: _object(call, keys, "s3:GetObject"),
    ("s3", "HeadObject"): lambda call, keys: _object(call, keys, "s3:GetObject"),
    ("s3", "DeleteObject"): lambda call, keys: _object(call, keys, "s3:DeleteObject"),
    ("s3", "ListObjectsV2"): _list,
    ("s3", "ListObjects"): _list,
    ("s3", "DeleteObjects"): _delete_objects,
    ("sns", "Publish"): _publish,
    ("sns", "PublishBatch"): _publish,
    ("secretsmanager", "GetSecretValue"): _get_secret,
    ("athena", "StartQueryExecution"): _start_query,
    ("athena", "GetQueryExecution"): _get_query,
    ("glue", "GetPartitions"): _glue_on_table("glue:GetPartitions"),
}


def requests_of(call: Call, keys: KeyLookup) -> list[Request]:
    mapping = REQUESTS.get((call.service, call.operation))
    if mapping is None:
        raise NotModelled(f"the code called {call.service}:{call.operation}: add the IAM requests it makes "
                          "(action, resource ARN, condition keys) to tests/iam_runtime.py REQUESTS")
    return mapping(call, keys)


# ---------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------
MOTO_REFUSALS = {"AccessDenied", "AccessDeniedException", "AuthorizationError", "InvalidClientTokenId",
                 "SignatureDoesNotMatch", "UnrecognizedClientException", "InvalidAccessKeyId"}


@dataclass
class Verdict:
    function_id: str
    denied: list[tuple[str, Request, str]]  # (call, request, why): a request AWS would refuse
    refused_by_moto: list[str]  # calls moto's own enforcement refused
    unused: list[Grant]  # grants (template text) no request used
    requests: list[Request]

    def report(self) -> str:
        lines = [f"{self.function_id}: {len(self.requests)} IAM requests judged"]
        lines += [f"  REFUSED  {request}: {why}  (for {call}; context {request.context})"
                  for call, request, why in self.denied]
        lines += [f"  REFUSED BY MOTO  {call}" for call in self.refused_by_moto]
        lines += [f"  unused grant  {grant.action} on {grant.resource}" for grant in self.unused]
        return "\n".join(lines)


def judged_requests(calls: list[Call], keys: KeyLookup) -> list[tuple[str, Request]]:
    """Each call's IAM requests (call, request), made while moto still holds the stack (keys are looked up)."""
    return [(str(call), request) for call in calls for request in requests_of(call, keys)]


def moto_refusals(calls: list[Call]) -> list[str]:
    refused = [str(call) for call in calls if call.error_code in MOTO_REFUSALS]
    return refused + [f"{call} (key {error.get('Key')}: {error.get('Code')})" for call in calls
                      if call.operation == "DeleteObjects" for error in (call.response or {}).get("Errors") or []]


def judge(role: FunctionRole, requests: list[tuple[str, Request]], refused_by_moto: list[str] = (),
          parameters: dict[str, str] | None = None, stack: MotoStack | None = None) -> Verdict:
    """Each request against the role's statements as written (resolved): what is missing, what is unused.

    With the stack, the resource policies on the request's resource are judged too: any explicit Deny in them
    refuses it, and a KMS key of the stack must allow the role in its key policy (directly, or the account,
    which hands the decision to IAM policies). An Allow in a resource policy is not counted: the role must
    allow what its function does on its own."""
    denied, judged = [], []
    used: set[Grant] = set()
    pairs = role.grant_pairs(parameters)
    principal = role_arn(role.role_id)
    for call, request in requests:
        request = _made_by(principal, request)
        decision = evaluate(role.statements, request)
        judged.append(request)
        reason = None if decision.allowed else "no statement of the role allows it"
        if stack is not None and reason is None:
            reason = _refused_by_resource_policies(stack, request, principal)
        if reason:
            denied.append((call, request, reason))
        used |= {written for resolved, written in pairs if grant_used_by(resolved, role.statements, request, decision)}
    unused = [written for _, written in pairs if written not in used]
    return Verdict(role.function_id, denied, list(refused_by_moto), unused, judged)


def first_refused(role: FunctionRole, requests: list[tuple[str, Request]]) -> tuple[str, Request] | None:
    """The first (call, request) no statement of the role allows: `judge(role, requests).denied`'s first entry,
    without the rest of the verdict (the unused grants cost most of a judgement, and the test that removes each
    grant in turn asks only whether something is refused)."""
    principal = role_arn(role.role_id)
    return next(((call, request) for call, request in requests
                 if not evaluate(role.statements, _made_by(principal, request)).allowed), None)


def _made_by(principal_arn: str, request: Request) -> Request:
    return Request(request.action, request.resource, {**principal_context(principal_arn), **request.context})


def principal_context(principal_arn: str) -> dict[str, str]:
    """The global condition keys of a Lambda function's call: its role's session, over TLS."""
    return {"aws:PrincipalArn": principal_arn, "aws:PrincipalAccount": ACCOUNT, "aws:PrincipalType": "AssumedRole",
            "aws:SecureTransport": "true"}


def _refused_by_resource_policies(stack: MotoStack, request: Request, principal: str) -> str | None:
    in_stack, policies = stack.policies_on(request.resource)
    decisions = [evaluate_resource_policy(statements, request, principal) for statements in policies]
    if any(decision.denied_by for decision in decisions):
        return "an explicit Deny of the resource's policy"
    if request.action.startswith("kms:") and in_stack and not any(decision.allowed for decision in decisions):
        return "the key policy admits neither the role nor the account"
    return None


__all__ = ["CannotJudge", "Call", "FunctionRole", "MotoStack", "NotModelled", "Verdict", "first_refused",
           "function_roles", "judge", "judged_requests", "moto_refusals", "requests_of"]
