"""The IAM evaluator the least-privilege tests judge with (tests/iam_policy.py), and the calls -> requests map
(tests/iam_runtime.py REQUESTS), on cases whose answer the IAM documentation gives."""

from __future__ import annotations

import pytest
from iam_policy import CannotJudge, Grant, Request, evaluate, evaluate_resource_policy, grant_used_by, grants, matches
from iam_runtime import Call, NotModelled, requests_of

BUCKET = "arn:aws:s3:::snapshots-bucket"
TOPIC = "arn:aws:sns:us-east-1:123456789012:changes"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1111"


def allow(action, resource, condition=None) -> dict:
    statement = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def allowed(statements, action, resource, context=None) -> bool:
    return evaluate(statements, Request(action, resource, context or {})).allowed


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("arn:aws:s3:::b/snapshots/*", "arn:aws:s3:::b/snapshots/devices/x.json", True),  # * crosses '/'
    ("arn:aws:s3:::b/snapshots/*", "arn:aws:s3:::b/changes/x.json", False),
    ("arn:aws:s3:::b/snapshots/*", "arn:aws:s3:::b/snapshots", False),
    ("arn:aws:s3:::b", "arn:aws:s3:::b/x", False),  # the bucket is not its objects
    ("arn:aws:s3:::b/a?c", "arn:aws:s3:::b/abc", True),
    ("arn:aws:s3:::b/a?c", "arn:aws:s3:::b/abbc", False),
    ("arn:aws:s3:::b/a.c", "arn:aws:s3:::b/abc", False),  # '.' is literal, not a regex
    ("arn:aws:s3:::b/[x]", "arn:aws:s3:::b/[x]", True),
])
def test_wildcards(pattern, value, expected):
    assert matches(pattern, value) is expected


def test_actions_ignore_case_and_resources_do_not():
    statements = [allow("S3:getobject", f"{BUCKET}/Snapshots/*")]
    assert allowed(statements, "s3:GetObject", f"{BUCKET}/Snapshots/a")
    assert not allowed(statements, "s3:GetObject", f"{BUCKET}/snapshots/a")
    assert not allowed(statements, "s3:GetObjectVersion", f"{BUCKET}/Snapshots/a")  # no prefix match


def test_nothing_allowed_is_denied_and_an_explicit_deny_wins():
    assert not allowed([], "s3:GetObject", f"{BUCKET}/a")
    statements = [allow("s3:*", "*"), {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/a"}]
    decision = evaluate(statements, Request("s3:DeleteObject", f"{BUCKET}/a"))
    assert not decision.allowed and decision.allowed_by == (0,) and decision.denied_by == (1,)
    assert allowed(statements, "s3:DeleteObject", f"{BUCKET}/b")


def test_not_action_and_not_resource():
    statements = [{"Effect": "Allow", "NotAction": "s3:Delete*", "NotResource": f"{BUCKET}/private/*"}]
    assert allowed(statements, "s3:GetObject", f"{BUCKET}/public/a")
    assert not allowed(statements, "s3:DeleteObject", f"{BUCKET}/public/a")
    assert not allowed(statements, "s3:GetObject", f"{BUCKET}/private/a")


def test_a_prefix_condition_on_listing():
    """The roles' ListBucket grants: only under their prefixes, and (as IAM documents a missing key) not at
    all for a request without s3:prefix."""
    statements = [allow("s3:ListBucket", BUCKET, {"StringLike": {"s3:prefix": ["snapshots/*", "changes/*"]}})]
    assert allowed(statements, "s3:ListBucket", BUCKET, {"s3:prefix": "changes/dt=2026-11-23/"})
    assert not allowed(statements, "s3:ListBucket", BUCKET, {"s3:prefix": "athena-results/"})
    assert not allowed(statements, "s3:ListBucket", BUCKET, {"s3:prefix": "snapshots"})  # no trailing '/'
    assert not allowed(statements, "s3:ListBucket", BUCKET)


def test_the_kms_conditions_of_the_bucket_key_grant():
    statement = allow(["kms:GenerateDataKey", "kms:Decrypt"], KEY, {
        "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:aws:s3:arn": [BUCKET, f"{BUCKET}/*"]}})
    through_s3 = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": BUCKET}
    assert allowed([statement], "kms:Decrypt", KEY, through_s3)
    assert allowed([statement], "kms:Decrypt", KEY, {**through_s3, "kms:EncryptionContext:aws:s3:arn": f"{BUCKET}/k"})
    assert not allowed([statement], "kms:Decrypt", KEY, {**through_s3, "kms:ViaService": "sns.us-east-1.amazonaws.com"})
    assert not allowed([statement], "kms:Decrypt", KEY, {**through_s3,
                                                          "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::other"})
    assert not allowed([statement], "kms:Decrypt", KEY)  # called directly, not through S3
    assert not allowed([statement], "kms:Encrypt", KEY, through_s3)


@pytest.mark.parametrize(("condition", "context", "expected"), [
    ({"StringNotEquals": {"k": "a"}}, {"k": "b"}, True),
    ({"StringNotEquals": {"k": "a"}}, {"k": "a"}, False),
    ({"StringNotEquals": {"k": "a"}}, {}, True),  # a negated operator holds on a missing key
    ({"StringEqualsIfExists": {"k": "a"}}, {}, True),
    ({"StringEqualsIfExists": {"k": "a"}}, {"k": "b"}, False),
    ({"StringEqualsIgnoreCase": {"k": "ABC"}}, {"k": "abc"}, True),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/x*"}}, {"aws:SourceArn": "arn:aws:events:r:1:rule/xy"},
     True),
    ({"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/a"}}, {"aws:PrincipalArn": "arn:aws:iam::1:role/a"},
     False),
    ({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "true"}, False),
    ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "true"}, True),
    ({"Null": {"k": "true"}}, {}, True),
    ({"Null": {"k": "false"}}, {}, False),
    ({"StringEquals": {"k": ["a", "b"]}}, {"k": "b"}, True),  # the values under a key: any of them
    ({"StringEquals": {"k": "a", "j": "b"}}, {"k": "a"}, False),  # every key must hold
    ({"ForAnyValue:StringEquals": {"k": ["a"]}}, {"k": ["x", "a"]}, True),
    ({"ForAllValues:StringEquals": {"k": ["a"]}}, {"k": ["x", "a"]}, False),
    ({"ForAllValues:StringEquals": {"k": ["a"]}}, {}, True),
])
def test_condition_operators(condition, context, expected):
    assert allowed([allow("s3:GetObject", "*", condition)], "s3:GetObject", f"{BUCKET}/a", context) is expected


@pytest.mark.parametrize("statement", [
    allow("s3:GetObject", "*", {"NumericLessThan": {"s3:max-keys": "10"}}),
    allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}/*"),
    {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"},
    {"Effect": "Maybe", "Action": "s3:GetObject", "Resource": "*"},
])
def test_what_it_does_not_implement_is_refused_not_guessed(statement):
    with pytest.raises(CannotJudge):
        evaluate([statement], Request("s3:GetObject", f"{BUCKET}/a"))


def test_grants_and_which_one_a_request_uses():
    statements = [allow(["s3:GetObject", "s3:PutObject"], [f"{BUCKET}/snapshots/*", f"{BUCKET}/changes/*"]),
                  {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"x": "true"}}}]
    found = grants(statements)
    assert [(g.action, g.resource) for g in found] == [
        ("s3:GetObject", f"{BUCKET}/snapshots/*"), ("s3:GetObject", f"{BUCKET}/changes/*"),
        ("s3:PutObject", f"{BUCKET}/snapshots/*"), ("s3:PutObject", f"{BUCKET}/changes/*")]
    request = Request("s3:PutObject", f"{BUCKET}/changes/a")
    decision = evaluate(statements, request)
    assert [g for g in found if grant_used_by(g, statements, request, decision)] == [
        Grant(0, "s3:PutObject", f"{BUCKET}/changes/*")]
    denied = Request("s3:PutObject", f"{BUCKET}/changes/a", {"x": "true"})
    assert not [g for g in found if grant_used_by(g, statements, denied, evaluate(statements, denied))]


# --- calls -> IAM requests --------------------------------------------------------------------------------
class Keys:
    """A KeyLookup with fixed answers."""

    results_locations = {"fleet": "s3://results-bucket/results/"}

    def __init__(self, bucket=(None, False), topic=None, secret_key=None):
        self._bucket, self._topic, self._secret_key = bucket, topic, secret_key

    def glue_table(self, database, table):
        if table.endswith("_history"):
            return {"StorageDescriptor": {"Location": f"s3://snapshots-bucket/history/{table}/"},
                    "PartitionKeys": [{"Name": "dt"}, {"Name": "snapshot_id"}]}
        return {"StorageDescriptor": {"Location": f"s3://snapshots-bucket/snapshots/{table}/"}, "PartitionKeys": [
            {"Name": "dt"}], "Parameters": {"storage.location.template": f"s3://snapshots-bucket/snapshots/{table}/dt=${{dt}}/"}}

    def bucket(self, bucket):
        return self._bucket

    def topic(self, topic_arn):
        return self._topic

    def secret(self, secret_id):
        return f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_id}-AbCdEf", self._secret_key


def test_delete_objects_is_one_delete_object_request_per_key():
    call = Call("s3", "DeleteObjects", {"Bucket": "snapshots-bucket", "Delete": {
        "Objects": [{"Key": "snapshots/devices/a.gz"}, {"Key": "snapshots/devices/b.gz"}]}})
    assert [str(request) for request in requests_of(call, Keys())] == [
        f"s3:DeleteObject on {BUCKET}/snapshots/devices/a.gz", f"s3:DeleteObject on {BUCKET}/snapshots/devices/b.gz"]


def test_publish_batch_is_sns_publish_and_an_encrypted_topic_needs_its_key():
    requests = requests_of(Call("sns", "PublishBatch", {"TopicArn": TOPIC, "PublishBatchRequestEntries": []}),
                           Keys(topic=KEY))
    assert [str(request) for request in requests] == [
        f"sns:Publish on {TOPIC}", f"kms:GenerateDataKey on {KEY}", f"kms:Decrypt on {KEY}"]
    assert requests[1].context == {"kms:ViaService": "sns.us-east-1.amazonaws.com"}


def test_objects_of_an_sse_kms_bucket_need_the_key_through_s3():
    put = Call("s3", "PutObject", {"Bucket": "snapshots-bucket", "Key": "changes/a"})
    [_, generate] = requests_of(put, Keys(bucket=(KEY, True)))
    assert str(generate) == f"kms:GenerateDataKey on {KEY}"
    assert generate.context == {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                                "kms:EncryptionContext:aws:s3:arn": BUCKET}  # an S3 Bucket Key: the bucket
    get = Call("s3", "GetObject", {"Bucket": "snapshots-bucket", "Key": "changes/a"})
    [_, decrypt] = requests_of(get, Keys(bucket=(KEY, False)))
    assert str(decrypt) == f"kms:Decrypt on {KEY}" and decrypt.context["kms:EncryptionContext:aws:s3:arn"] == \
        f"{BUCKET}/changes/a"
    assert len(requests_of(get, Keys())) == 1  # SSE-S3: no key to grant


def test_a_missing_key_is_answered_only_to_who_may_list():
    call = Call("s3", "GetObject", {"Bucket": "snapshots-bucket", "Key": "changes/_published/x/done.json"},
                error_code="NoSuchKey")
    [read, listing] = requests_of(call, Keys(bucket=(KEY, True)))  # nothing was decrypted
    assert str(read) == f"s3:GetObject on {BUCKET}/changes/_published/x/done.json"
    assert str(listing) == f"s3:ListBucket on {BUCKET}"
    assert listing.context == {"s3:prefix": "changes/_published/x/done.json"}  # the key, as S3 checks it


def test_a_secret_under_a_customer_key_needs_decrypt_through_secrets_manager():
    [read, decrypt] = requests_of(Call("secretsmanager", "GetSecretValue", {"SecretId": "kandji"}),
                                  Keys(secret_key=KEY))
    assert read.resource.startswith("arn:aws:secretsmanager:") and str(decrypt) == f"kms:Decrypt on {KEY}"
    assert decrypt.context["kms:ViaService"] == "secretsmanager.us-east-1.amazonaws.com"


def athena_insert(sql: str) -> Call:
    return Call("athena", "StartQueryExecution", {"QueryString": sql, "WorkGroup": "fleet",
                                                  "QueryExecutionContext": {"Database": "kandji"}},
                response={"QueryExecutionId": "q7"})


def test_an_athena_insert_is_authorized_in_its_workgroup_and_runs_with_the_callers_rights():
    from kandji_snapshots.history.tables import HISTORY_TABLES, insert_sql

    [devices] = [table for table in HISTORY_TABLES if table.name == "devices_history"]
    part = "s3://snapshots-bucket/snapshots/devices/dt=2026-12-07/20261207T050449Z-00000.json.gz"
    requests = requests_of(athena_insert(insert_sql(devices, "20261207T050449Z", [part])), Keys(bucket=(KEY, True)))
    glue = "arn:aws:glue:us-east-1:123456789012"
    assert {str(request) for request in requests} == {
        "athena:StartQueryExecution on arn:aws:athena:us-east-1:123456789012:workgroup/fleet",
        *(f"glue:GetDatabase on {arn}" for arn in (f"{glue}:catalog", f"{glue}:database/kandji")),
        *(f"glue:GetTable on {arn}" for arn in (f"{glue}:catalog", f"{glue}:database/kandji",
                                                f"{glue}:table/kandji/devices",
                                                f"{glue}:table/kandji/devices_history")),
        *(f"{action} on {arn}" for action in ("glue:GetPartition", "glue:BatchCreatePartition")
          for arn in (f"{glue}:catalog", f"{glue}:database/kandji", f"{glue}:table/kandji/devices_history")),
        f"s3:ListBucket on {BUCKET}",  # the partition the WHERE names
        f"s3:GetObject on {BUCKET}/snapshots/devices/dt=2026-12-07/20261207T050449Z-00000.json.gz",  # "$path" only
        f"kms:Decrypt on {KEY}",
        f"s3:PutObject on {BUCKET}/history/devices_history/dt=2026-12-07/snapshot_id=20261207T050449Z/q7_bucket-00000",
        f"kms:GenerateDataKey on {KEY}",  # for the Parquet file and the manifest (Keys gives both buckets KEY)
        "s3:PutObject on arn:aws:s3:::results-bucket/results/tables/q7-manifest.csv",
        f"s3:GetBucketLocation on {BUCKET}", "s3:GetBucketLocation on arn:aws:s3:::results-bucket"}
    [listing] = [request for request in requests if request.action == "s3:ListBucket"]
    assert listing.context == {"s3:prefix": "snapshots/devices/dt=2026-12-07/"}


def test_an_athena_read_without_a_path_list_opens_every_file_of_the_partition():
    requests = requests_of(athena_insert(
        "INSERT INTO devices_history SELECT t.* FROM devices t JOIN committed c ON c.snapshot_id = t.snapshot_id "
        "WHERE t.dt = '2026-12-07' AND t.snapshot_id = '20261207T050449Z' "
        "AND t.\"$path\" IN ('s3://snapshots-bucket/snapshots/devices/p.gz')"), Keys())
    reads = {request.resource for request in requests if request.action == "s3:GetObject"}
    assert reads == {f"{BUCKET}/snapshots/devices/p.gz", f"{BUCKET}/snapshots/committed/dt=2026-12-07/*"}
    assert "glue:GetTable on arn:aws:glue:us-east-1:123456789012:table/kandji/committed" in map(str, requests)


def test_an_athena_query_other_than_an_insert_is_not_judged():
    with pytest.raises(NotModelled, match="INSERT INTO"):
        requests_of(athena_insert("SELECT 1"), Keys())


def test_a_call_nobody_mapped_fails_loudly():
    with pytest.raises(NotModelled, match="s3:CopyObject"):
        requests_of(Call("s3", "CopyObject", {}), Keys())


# --- resource policies --------------------------------------------------------------------------------------
ROLE = "arn:aws:iam::123456789012:role/DifferFunctionRole"
OTHER_ROLE = "arn:aws:iam::123456789012:role/DigestFunctionRole"
TOPIC_POLICY = [
    {"Sid": "AllowDifferPublish", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "sns:Publish",
     "Resource": TOPIC},
    {"Sid": "DenyPublishFromAnyoneElse", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish", "Resource": TOPIC,
     "Condition": {"ArnNotEquals": {"aws:PrincipalArn": ROLE}}},
    {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish", "Resource": TOPIC,
     "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
]


def publish(principal: str, secure: str = "true") -> Request:
    return Request("sns:Publish", TOPIC, {"aws:PrincipalArn": principal, "aws:SecureTransport": secure})


def test_a_topic_policy_admits_its_publisher_and_denies_anyone_else():
    assert evaluate_resource_policy(TOPIC_POLICY, publish(ROLE), ROLE).allowed
    other = evaluate_resource_policy(TOPIC_POLICY, publish(OTHER_ROLE), OTHER_ROLE)
    assert not other.allowed and other.denied_by == (1,)
    assert evaluate_resource_policy(TOPIC_POLICY, publish(ROLE, secure="false"), ROLE).denied_by == (2,)


def test_who_a_principal_names():
    key_policy = [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "kms:Decrypt", "Resource": "*"}]
    request = Request("kms:Decrypt", KEY)
    assert evaluate_resource_policy(key_policy, request, ROLE).allowed_by == (0,)  # the account: IAM decides
    assert not evaluate_resource_policy(key_policy, request, "arn:aws:iam::999999999999:role/x").allowed
    assert not evaluate_resource_policy(key_policy[1:], request, ROLE).allowed  # a role is not a service
    with pytest.raises(CannotJudge):
        evaluate_resource_policy([{"Effect": "Deny", "NotPrincipal": {"AWS": ROLE}, "Action": "*", "Resource": "*"}],
                                 request, ROLE)
