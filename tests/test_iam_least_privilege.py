"""Each function runs under exactly its role from template.yaml: nothing it does is refused, nothing granted is idle.

The whole pipeline runs (collector, differ, digest handlers; the Kandji simulator; moto), each handler under
temporary credentials of a moto role holding that function's statements, resolved for the resources created
in moto (tests/iam_runtime.py). Two judges:

  - moto enforces IAM (its INITIAL_NO_AUTH_ACTION_COUNT switch): a call the role does not allow fails.
  - every AWS call the handler makes is recorded, turned into the IAM requests AWS would authorize (with the
    resource ARN and condition keys; KMS requests an encrypted topic, bucket or secret makes on the caller's
    behalf included) and judged against the role's statements as written (tests/iam_policy.py). A request
    no statement allows is a missing permission; a grant no request used is listed, and must be in
    KNOWN_UNUSED with the reason it is there; a grant a request used must be needed (removed, the judge
    finds a request refused).

Functions are found in the template, not listed here: a new function fails
`test_every_function_of_the_template_is_run_under_its_role` until the pipeline below runs it.
docs/iam.md says what neither judge can see.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import defaultdict
from datetime import date, timedelta

import boto3
import pytest
from aws_helpers import manifests
from conftest import FakeLambdaContext, load_handler
from handler_pipeline import manifest_event
from iam_runtime import (
    Call,
    MotoStack,
    Verdict,
    first_refused,
    function_roles,
    judge,
    judged_requests,
    moto_refusals,
)
from template_model import ALLOWED_MANAGED_POLICIES

from kandji_snapshots.errors import DeadlineExceeded, KandjiSnapshotsError, SnapshotWriteError
from kandji_snapshots.history.tables import HISTORY_TABLES
from kandji_snapshots.snapshots.layout import history_partition_prefix, manifest_key
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-iam-token"
FEATURES = {"ChatNotifications": "Enabled", "DailyDigest": "Enabled"}  # every optional function and grant
DEVICES = 20  # more than one deadline check (every 16 devices compared): the differ pauses and resumes

# (function, action, resource as template.yaml writes it) -> why the code never uses it.
KNOWN_UNUSED = {
    ("CollectorFunction", "sqs:SendMessage", "${CollectorFailureQueue.Arn}"):
        "SAM's grant for the OnFailure destination: Lambda sends the failed invocation's record with the "
        "function's role; the code never calls SQS",
    ("DifferFunction", "sqs:SendMessage", "${DifferFailureQueue.Arn}"):
        "SAM's grant for the OnFailure destination: Lambda sends the failed invocation's record with the "
        "function's role; the code never calls SQS",
    ("HistoryFunction", "s3:AbortMultipartUpload", "arn:${AWS::Partition}:s3:::${SnapshotBucket}/history/*"):
        "Athena writes large Parquet files with multipart uploads, with the caller's rights, and aborts the ones a "
        "failed INSERT leaves; which upload a real INSERT makes is not observable offline (docs/iam.md)",
    ("HistoryFunction", "s3:ListMultipartUploadParts", "arn:${AWS::Partition}:s3:::${SnapshotBucket}/history/*"):
        "Athena's multipart uploads of large Parquet files, as above",
    ("HistoryFunction", "s3:ListBucket", "${AthenaResultsBucket.Arn}"):
        "Athena may list the workgroup's results location with the caller's rights before writing there (its "
        "documentation lists s3:ListBucket among a results location's permissions); not observable offline",
}


# ---------------------------------------------------------------------------
# Deployments: the stack's own secret and SSE-S3; or an existing secret and the bucket under customer keys
# ---------------------------------------------------------------------------
def stack_secret_parameters() -> dict[str, str]:
    return dict(FEATURES)


def customer_keys_parameters() -> dict[str, str]:
    kms = boto3.client("kms")
    secret_key = kms.create_key(Description="the existing secret's key")["KeyMetadata"]["Arn"]
    bucket_key = kms.create_key(Description="the snapshot bucket's key")["KeyMetadata"]["Arn"]
    secret = boto3.client("secretsmanager").create_secret(Name="existing/kandji", KmsKeyId=secret_key)["ARN"]
    return {**FEATURES, "ExistingSecretArn": secret, "ExistingSecretKmsKeyArn": secret_key,
            "SnapshotBucketKmsKeyArn": bucket_key}


DEPLOYMENTS = {"stack-secret": stack_secret_parameters, "customer-keys": customer_keys_parameters}


class PausingContext(FakeLambdaContext):
    """20 s left, always: under the differ's 30 s comparison margin, over its 10 s publishing margin."""

    def get_remaining_time_in_millis(self) -> int:
        return 20_000


class Pipeline:
    """The stack's handlers, each run under its own role, against a simulated fleet; the calls each one made."""

    LOCAL = {"KANDJI_ALLOW_INSECURE_LOCALHOST": "true", "KANDJI_MAX_REQUESTS_PER_SECOND": "1000",
             "POWERTOOLS_TRACE_DISABLED": "1"}

    def __init__(self, stack: MotoStack, monkeypatch, fleet: Fleet):
        self.stack, self.monkeypatch, self.fleet = stack, monkeypatch, fleet
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self.bucket = stack.roles["CollectorFunction"].environment["SNAPSHOT_BUCKET"]

    @contextlib.contextmanager
    def kandji(self):
        """The simulator running, its URL and token in the collector's secret."""
        sim = KandjiSimulator(self.fleet, token=TOKEN).start()
        try:
            boto3.client("secretsmanager").put_secret_value(
                SecretId=self.stack.roles["CollectorFunction"].environment["KANDJI_SECRET_ID"],
                SecretString=json.dumps({"api_url": sim.api_url, "api_token": TOKEN}))
            yield sim
        finally:
            sim.stop()

    def run(self, function_id: str, handler: str, event: dict, lambda_context=None):
        with self.stack.running_as(self.stack.roles[function_id], self.monkeypatch, self.LOCAL) as recorded:
            try:
                return load_handler(handler).lambda_handler(event, lambda_context or FakeLambdaContext())
            finally:
                self.calls[function_id] += recorded

    def collect(self):
        # Snapshot ids have one-second resolution: a run starting in the same second as a committed snapshot
        # waits for the next one itself (SnapshotCollector._new_snapshot_id), with the manifest read every run makes.
        return self.run("CollectorFunction", "collector", {"source": "kandji-snapshots.schedule"})

    def diff(self, snapshot: dict, lambda_context=None):
        return self.run("DifferFunction", "differ", manifest_event(manifest_key(snapshot["snapshot_id"]), self.bucket),
                        lambda_context)


def run_pipeline(stack: MotoStack, monkeypatch) -> dict[str, list[Call]]:
    """Every function's paths that touch AWS differently, each under its role: the calls each one made.

    Collector: a first and a second snapshot, and a run whose manifest write is refused (it deletes its parts,
    the tenant tables' and audit events' included, and its audit claim).
    Differ: the first snapshot; the second against an incomplete first (it releases its claim); the second
    cut short by the deadline (checkpoint), then finished (checkpoint deleted), publishing to both topics.
    Digest: today's changes (read, not marked sent), and the day before's (over: claimed, then marked).
    History: both snapshots copied (a file a failed copy left deleted first), then a run that finds the queries
    it noted succeeded. Then a third snapshot whose previous lost a part: its diff fails, the remedy (that
    snapshot's manifest deleted) is followed, and its retry releases its claim and takes over the one before."""
    fleet = Fleet.generate(DEVICES, seed=13, platforms=["Mac"])
    pipeline, s3 = Pipeline(stack, monkeypatch, fleet), boto3.client("s3")
    bucket = pipeline.bucket
    with pipeline.kandji() as sim:
        pipeline.collect()
        for device_id in fleet.device_ids():  # high changes (the chat topic gets them) on every device: all
            fleet.set_filevault(device_id, False)  # compared, not skipped by their fingerprints
        fleet.check_in_all()
        pipeline.collect()
        sim.tenant.add_audit_event()  # the refused run has audit events to delete too (and its audit claim)
        refuse_manifests = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{bucket}/snapshots/manifests/*"}]}
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(refuse_manifests))
        with pytest.raises(SnapshotWriteError, match="manifests"):
            pipeline.collect()
        s3.delete_bucket_policy(Bucket=bucket)

    first, second = sorted(manifests(bucket), key=lambda manifest: manifest["snapshot_id"])
    assert pipeline.diff(first)["events"] == 0
    damaged = first["tables"]["device_apps"]["keys"][0]
    body = s3.get_object(Bucket=bucket, Key=damaged)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=damaged)
    with pytest.raises(KandjiSnapshotsError):
        pipeline.diff(second)
    s3.put_object(Bucket=bucket, Key=damaged, Body=body)
    with pytest.raises(DeadlineExceeded, match="stopped comparing"):
        pipeline.diff(second, PausingContext())
    result = pipeline.diff(second, PausingContext())
    assert result["events"] >= 1 and result["published_messages"] >= 1, result

    today = pipeline.run("DigestFunction", "digest", {"day": second["dt"]})  # read the changes; the day is not over
    assert today["published"] is True and today["events"] >= 1, today
    day_before = (date.fromisoformat(second["dt"]) - timedelta(days=1)).isoformat()
    over = pipeline.run("DigestFunction", "digest", {"day": day_before})  # a day that is over: claimed, marked
    assert over["published"] is True, over

    leftover = history_partition_prefix(HISTORY_TABLES[0].name, first["snapshot_id"]) + "failed-attempt.parquet"
    s3.put_object(Bucket=bucket, Key=leftover, Body=b"a file an earlier failed copy left")
    copied = pipeline.run("HistoryFunction", "history", {})  # Athena (the stand-in): one INSERT per table
    assert copied["copied"] == 2 * len(HISTORY_TABLES) and not copied["failed"], copied
    again = pipeline.run("HistoryFunction", "history", {})  # no partition registered: the noted queries count
    assert again["copied"] == 0 and again["already_copied"] == 2 * len(HISTORY_TABLES), again
    assert leftover not in {item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}

    # The remedy the differ's error gives for a part lost for good: delete the manifest of the snapshot that
    # lost it. The next snapshot's retry releases its claim on it and takes over the claim that one held.
    with pipeline.kandji():
        fleet.set_filevault(fleet.device_ids()[0], True)  # a change, so the diff reads that device's details
        fleet.check_in_all()
        pipeline.collect()
    third = max(manifests(bucket), key=lambda manifest: manifest["snapshot_id"])
    s3.delete_object(Bucket=bucket, Key=second["tables"]["device_details"]["keys"][0])
    with pytest.raises(KandjiSnapshotsError):
        pipeline.diff(third)
    s3.delete_object(Bucket=bucket, Key=manifest_key(second["snapshot_id"]))
    assert pipeline.diff(third)["previous_snapshot_id"] == first["snapshot_id"]
    return pipeline.calls


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------
# what run_pipeline runs
PIPELINE_FUNCTIONS = {"CollectorFunction", "DifferFunction", "DigestFunction", "HistoryFunction"}


def test_every_function_of_the_template_is_run_under_its_role(cfn) -> None:
    """Whatever its condition: a function the template may create is run by run_pipeline, under FEATURES."""
    functions = {logical_id for logical_id, resource in cfn["Resources"].items()
                 if resource["Type"] == "AWS::Lambda::Function"}
    assert functions <= PIPELINE_FUNCTIONS, (
        f"{sorted(functions - PIPELINE_FUNCTIONS)} of template.yaml never run under their roles: run them in "
        "tests/test_iam_least_privilege.py run_pipeline, add them to PIPELINE_FUNCTIONS, and the parameters "
        "that create them to FEATURES")
    assert set(function_roles(cfn, dict(FEATURES))) == PIPELINE_FUNCTIONS, "FEATURES must create every function"


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_each_function_does_what_its_role_allows_and_uses_what_it_grants(aws, cfn, monkeypatch, deployment) -> None:
    stack = MotoStack(cfn, DEPLOYMENTS[deployment](), aws)
    calls = run_pipeline(stack, monkeypatch)
    requests = {function_id: judged_requests(calls[function_id], stack.keys) for function_id in stack.roles}
    verdicts: dict[str, Verdict] = {
        function_id: judge(stack.roles[function_id], requests[function_id], moto_refusals(calls[function_id]),
                           stack.parameters, stack)
        for function_id in sorted(stack.roles)}
    report = "\n".join(verdict.report() for verdict in verdicts.values())
    print(f"\n[{deployment}]\n{report}")  # each function's judged requests and unused grants, for `pytest -s`

    for function_id, verdict in verdicts.items():
        assert verdict.requests, f"{function_id} made no AWS call: the pipeline did not run it"
        assert verdict.refused_by_moto == [], f"moto refused calls of {function_id}:\n{report}"
        assert verdict.denied == [], f"{function_id}'s role lacks permissions its code uses:\n{report}"
        # The AWS managed policies SAM attaches grant what the Lambda runtime does (logs, X-Ray), never the
        # code: a call of the code to CloudWatch Logs or X-Ray would fail above, unmapped in REQUESTS.
        assert {arn.split(":policy/")[1] for arn in stack.roles[function_id].managed_policy_arns} <= \
            ALLOWED_MANAGED_POLICIES
        unused = {(function_id, grant.action, grant.resource) for grant in verdict.unused}
        known = {entry for entry in KNOWN_UNUSED if entry[0] == function_id}
        assert unused == known, (f"{function_id}: grants no call used (not in KNOWN_UNUSED): "
                                 f"{sorted(unused - known)}; in KNOWN_UNUSED but used: {sorted(known - unused)}")

    # Each grant a call used is needed: without it, the judge finds the permission missing. (It also proves
    # the judge can fail: every one of these is a template with one permission removed.)
    for function_id, role in stack.roles.items():
        for grant, written in role.grant_pairs(stack.parameters):
            if written in verdicts[function_id].unused:
                continue
            assert first_refused(role.without(grant), requests[function_id]), \
                f"{function_id}: without {written.action} on {written.resource} nothing is refused"


def without_action(cfn: dict, role_id: str, sid: str, action: str) -> dict:
    """A copy of the transformed template whose role `role_id` no longer has `action` in statement `sid`."""
    weaker = copy.deepcopy(cfn)
    [statement] = [statement for policy in weaker["Resources"][role_id]["Properties"]["Policies"]
                   for statement in policy["PolicyDocument"]["Statement"] if statement.get("Sid") == sid]
    statement["Action"] = [name for name in statement["Action"] if name != action]
    return weaker


def test_a_permission_taken_from_the_template_fails_both_judges(aws, cfn, monkeypatch) -> None:
    """The collector's role without s3:PutObject: moto refuses the first write, the run fails, and the
    judge names the missing permission."""
    stack = MotoStack(without_action(cfn, "CollectorFunctionRole", "ReadWriteSnapshots", "s3:PutObject"),
                      stack_secret_parameters(), aws)
    pipeline = Pipeline(stack, monkeypatch, Fleet.generate(3, seed=5, platforms=["Mac"]))
    with pipeline.kandji(), pytest.raises(SnapshotWriteError, match="AccessDenied"):
        pipeline.collect()
    calls = pipeline.calls["CollectorFunction"]
    verdict = judge(stack.roles["CollectorFunction"], judged_requests(calls, stack.keys), moto_refusals(calls))
    assert verdict.refused_by_moto and all("PutObject" in call for call in verdict.refused_by_moto)
    assert {(request.action, request.resource.split("/")[1]) for _, request, _ in verdict.denied} == {
        ("s3:PutObject", "snapshots")}
