"""Alarms, the alarm topic and the dashboard of template.yaml.

The metric names are not copied here: they are read from the code that emits them
(layers/common/kandji_snapshots/metrics.py), both by grepping the source and
by calling those functions with a recording stand-in for Powertools' Metrics, so renaming a metric in the
code without updating the template fails these tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from template_model import (
    PSEUDO_PARAMETERS,
    evaluate_conditions,
    parameter_values,
    resolve,
    resolved_resources,
    resources_of_type,
)

from kandji_snapshots import metrics as run_metrics
from kandji_snapshots.collect.posture import POSTURE_CATEGORIES
from kandji_snapshots.errors import KandjiAuthError, RateLimitExhausted

ROOT = Path(__file__).resolve().parents[1]
METRIC_SOURCES = [ROOT / "layers/common/kandji_snapshots/metrics.py"]
ALARM_TARGET = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}
EXISTING_TOPIC = "arn:aws:sns:us-east-1:123456789012:ops-alarms"
EMAIL = "mdm-ops@example.com"

# Alarm -> (namespace, metric, dimension value, comparison, threshold, TreatMissingData).
# "custom" = the functions' EMF namespace with dimension service=<POWERTOOLS_SERVICE_NAME>.
def _errors_alarm(function: str) -> tuple:
    return ("AWS/Lambda", "Errors", {"Ref": function}, "GreaterThanOrEqualToThreshold", 1, "notBreaching")


def _queue_alarm(queue: str) -> tuple:
    return ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": [queue, "QueueName"]},
            "GreaterThanThreshold", 0, "notBreaching")


EXPECTED_ALARMS = {
    "CollectorErrorsAlarm": _errors_alarm("CollectorFunction"),
    "DifferErrorsAlarm": _errors_alarm("DifferFunction"),
    "DigestErrorsAlarm": _errors_alarm("DigestFunction"),
    "HistoryErrorsAlarm": _errors_alarm("HistoryFunction"),
    "SnapshotFreshnessAlarm": ("custom", "SnapshotsCommitted", None, "LessThanThreshold", 1, "breaching"),
    "AuthenticationFailedAlarm": ("custom", "AuthenticationFailed", None,
                                  "GreaterThanOrEqualToThreshold", 1, "notBreaching"),
    "RateLimitExhaustedAlarm": ("custom", "RateLimitExhausted", None,
                                "GreaterThanOrEqualToThreshold", 1, "notBreaching"),
    **{f"{queue}Alarm": _queue_alarm(queue)
       for queue in ("CollectorFailureQueue", "DifferFailureQueue", "CollectorScheduleDLQ", "DifferRuleDLQ")},
    # What the Athena workgroup's queries scanned in one UTC day, against AthenaBytesScannedAlarmPerDay.
    "AthenaBytesScannedAlarm": ("AWS/Athena", "ProcessedBytes", {"Ref": "AthenaWorkGroup"}, "GreaterThanThreshold",
                                {"Ref": "AthenaBytesScannedAlarmPerDay"}, "notBreaching"),
}
# Alarms of optional features: they exist exactly when their feature's condition holds.
CONDITIONAL_ALARMS = {"DigestErrorsAlarm": ("CreateDailyDigest", {"DailyDigest": "Enabled"})}
FEATURES = [{}, {"DailyDigest": "Enabled"}]
# Alarms whose window is "the last two schedule periods": Period 120 s x ScheduleIntervalMinutes periods.
SCHEDULE_WINDOW_ALARMS = {"CollectorErrorsAlarm", "DifferErrorsAlarm", "SnapshotFreshnessAlarm",
                          "AuthenticationFailedAlarm", "RateLimitExhaustedAlarm"}




@pytest.fixture(scope="module")
def powertools(sam: dict[str, Any]) -> tuple[str, str]:
    """(namespace, service) the functions' EMF metrics are published under."""
    env = sam["Globals"]["Function"]["Environment"]["Variables"]
    return env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]


# ---------------------------------------------------------------------------
# What the code emits
# ---------------------------------------------------------------------------
class RecordingMetrics:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_metric(self, name: str | None = None, unit: Any = None, value: Any = None) -> None:
        self.names.append(name)


def _grepped_metric_names() -> set[str]:
    """Literal names passed to add_metric in the emitting modules (positional or name=)."""
    names = set()
    for source in METRIC_SOURCES:
        text = source.read_text(encoding="utf-8")
        names |= set(re.findall(r"add_metric\(\s*(?:name=)?\"(\w+)\"", text))
    return names


def _dynamic_metric_prefixes() -> set[str]:
    """Prefixes of f-string names (f"Events{name}") passed to add_metric."""
    prefixes = set()
    for source in METRIC_SOURCES:
        prefixes |= set(re.findall(r"add_metric\(\s*(?:name=)?f\"(\w+)\{", source.read_text(encoding="utf-8")))
    return prefixes


@pytest.fixture(scope="module")
def emitted_metrics() -> set[str]:
    """Every custom metric name a collector or differ run can emit."""
    recorder = RecordingMetrics()
    run_metrics.record_requests(recorder, {"total": 1, "retries": 0, "rate_limited": 0})
    run_metrics.record_snapshot(recorder, {"device_count": 1, "skipped_devices": [], "refreshed_devices": 1,
                                                 "carried_devices": 0, "pending_devices": 0, "duration_seconds": 1.0,
                                                 "posture": {"categories": {
                                                     name: {"status": "read", "rows": 1, "requests": 1, "devices": 1}
                                                     for name in POSTURE_CATEGORIES}}})
    run_metrics.record_failure(recorder, KandjiAuthError("401"))
    run_metrics.record_failure(recorder, RateLimitExhausted("429"))
    run_metrics.record_diff(recorder, SimpleNamespace(
        published_messages=1, duration_seconds=1.0, already_done=False, counts_by_change_type={}, event_count=0,
        counts_by_severity={}, suppressed=False))
    recorded = set(recorder.names)
    grepped = _grepped_metric_names()
    assert grepped, "no add_metric(\"...\") found: did the metrics move?"
    assert grepped <= recorded, f"emitted in the source but not recorded here: {grepped - recorded}"
    for prefix in _dynamic_metric_prefixes():
        assert any(name.startswith(prefix) and name != prefix for name in recorded), prefix
    assert recorded - grepped == {n for n in recorded if any(n.startswith(p) for p in _dynamic_metric_prefixes())}
    return recorded


def test_the_metrics_the_issue_names_are_emitted(emitted_metrics: set[str]) -> None:
    assert {"Devices", "SkippedDevices", "RefreshedDevices", "CarriedDevices", "PendingDevices", "RunDuration",
            "SnapshotsCommitted", "KandjiRequests", "KandjiRetries", "KandjiRateLimited", "CollectionFailed",
            "AuthenticationFailed", "RateLimitExhausted", "ChangeEvents", "HighSeverityEvents", "PublishedMessages",
            "SuppressedRuns", "DiffDuration"} <= emitted_metrics
    assert {"EventsDeviceAdded", "EventsDeviceRemoved", "EventsDeviceChanged", "EventsAppInstalled",
            "EventsAppUpdated", "EventsAppRemoved"} <= emitted_metrics


# ---------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------
def alarms(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in resources_of_type(cfn, "AWS::CloudWatch::Alarm").items()}


def expected_alarms(overrides: dict[str, str]) -> set[str]:
    """The alarms a stack deployed with `overrides` has."""
    return {lid for lid in EXPECTED_ALARMS
            if lid not in CONDITIONAL_ALARMS or CONDITIONAL_ALARMS[lid][1].items() <= overrides.items()}


def test_every_alarm_exists_and_notifies_the_alarm_topic(cfn: dict[str, Any]) -> None:
    found = alarms(cfn)
    assert set(found) == set(EXPECTED_ALARMS)
    for lid, alarm in found.items():
        condition = cfn["Resources"][lid].get("Condition")
        if lid in CONDITIONAL_ALARMS:
            assert condition == CONDITIONAL_ALARMS[lid][0], f"{lid} exists only with its feature"
        else:
            assert condition is None, f"{lid} must always exist"
        assert alarm["AlarmActions"] == [ALARM_TARGET], lid
        assert alarm["OKActions"] == [ALARM_TARGET], f"{lid}: the operator must hear when it clears"
        assert alarm.get("ActionsEnabled", True) is True
        assert "InsufficientDataActions" not in alarm
    # The target is the created topic, or the given one.
    for overrides, target in (({}, {"Ref": "AlarmTopic"}), ({"AlarmTopicArn": EXISTING_TOPIC}, EXISTING_TOPIC)):
        for features in FEATURES:
            resources = resolved_resources(cfn, {**overrides, **features})
            deployed = {lid for lid, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
            assert deployed == expected_alarms(features), features
            for lid in deployed:
                assert resources[lid]["Properties"]["AlarmActions"] == [target]
                assert resources[lid]["Properties"]["OKActions"] == [target]


@pytest.mark.parametrize("alarm_id", sorted(EXPECTED_ALARMS))
def test_alarm_metric_threshold_and_missing_data(cfn: dict[str, Any], powertools: tuple[str, str],
                                                 emitted_metrics: set[str], alarm_id: str) -> None:
    namespace, metric, dimension, comparison, threshold, missing = EXPECTED_ALARMS[alarm_id]
    alarm = alarms(cfn)[alarm_id]
    if namespace == "custom":
        namespace = powertools[0]
        assert metric in emitted_metrics, f"{alarm_id} watches {metric}, which the code does not emit"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": powertools[1]}]
    else:
        name = {"AWS/Lambda": "FunctionName", "AWS/SQS": "QueueName", "AWS/Athena": "WorkGroup"}[namespace]
        assert alarm["Dimensions"] == [{"Name": name, "Value": dimension}]
    assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
    assert alarm["ComparisonOperator"] == comparison
    assert alarm["Threshold"] == threshold
    assert alarm["TreatMissingData"] == missing, "TreatMissingData is a decision: set it"
    assert alarm["Statistic"] == ("Maximum" if namespace == "AWS/SQS" else "Sum")


@pytest.mark.parametrize("alarm_id", sorted(EXPECTED_ALARMS))
def test_alarm_names_and_descriptions(cfn: dict[str, Any], alarm_id: str) -> None:
    alarm = alarms(cfn)[alarm_id]
    # The topic and key policies admit alarms named <stack>-*: every alarm must be one of them.
    assert re.fullmatch(r"\$\{AWS::StackName\}-[a-z0-9-]+", alarm["AlarmName"]["Fn::Sub"]), alarm["AlarmName"]
    description = alarm["AlarmDescription"]
    text = description["Fn::Sub"] if isinstance(description, dict) else description
    known = set(cfn["Resources"]) | set(cfn["Parameters"]) | PSEUDO_PARAMETERS
    for name in re.findall(r"\$\{([^}!]+)\}", text):
        assert name.split(".")[0] in known, f"{alarm_id}: ${{{name}}}"
    # CloudWatch allows 1024 characters: check with the longest names CloudFormation can generate.
    longest = re.sub(r"\$\{[^}]+\}", "x" * 80, text)
    assert len(longest) <= 1024, f"{alarm_id}: description too long ({len(longest)})"
    assert len(text) >= 200, f"{alarm_id}: say what it means and what to do"


def schedule_seconds(resources: dict[str, Any], minutes: int) -> int:
    """The collector schedule's period as EventBridge Scheduler reads its rate() expression."""
    [schedule] = [r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"
                  and r["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": ["CollectorFunction", "Arn"]}]
    expression = schedule["Properties"]["ScheduleExpression"]
    if isinstance(expression, dict):  # !Sub over the one parameter it may use
        expression = expression["Fn::Sub"].replace("${ScheduleIntervalMinutes}", str(minutes))
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression)
    assert match, f"not a rate() expression Scheduler accepts: {expression}"
    value, unit = int(match[1]), match[2]
    assert (value == 1) == (unit in ("minute", "hour")), f"{expression}: singular unit for 1 only"
    return value * (3600 if unit.startswith("hour") else 60)


@pytest.mark.parametrize("minutes", [1, 5, 60, 180, 720])
def test_schedule_window_alarms_derive_from_the_schedule_interval(cfn: dict[str, Any], minutes: int) -> None:
    """The schedule and every alarm window come from ScheduleIntervalMinutes alone: Period x EvaluationPeriods
    = two schedule periods, within CloudWatch's limits, for any allowed value."""
    resources = resolved_resources(cfn, {"ScheduleIntervalMinutes": str(minutes)})
    schedule = schedule_seconds(resources, minutes)
    assert schedule == minutes * 60
    for alarm_id in SCHEDULE_WINDOW_ALARMS:
        alarm = resources[alarm_id]["Properties"]
        period, periods = alarm["Period"], int(alarm["EvaluationPeriods"])
        assert period % 60 == 0 and period < 3600
        assert period * periods == 2 * schedule, f"{alarm_id}: the window must be two schedule periods"
        assert period * periods <= 86_400, "CloudWatch: at most one day for periods under an hour"
        datapoints = int(alarm["DatapointsToAlarm"])
        if alarm_id == "SnapshotFreshnessAlarm":
            assert datapoints == periods, "stale only when NO period of the window saw a snapshot"
        else:
            assert datapoints == 1, "one failure in the window raises it"


def test_freshness_alarm(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    alarm = alarms(cfn)["SnapshotFreshnessAlarm"]
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == {"Ref": "ScheduleIntervalMinutes"}
    assert alarm["Period"] == 120
    parameter = sam["Parameters"]["ScheduleIntervalMinutes"]
    assert parameter["Type"] == "Number" and int(parameter["Default"]) == 60
    assert "ScheduleExpression" not in sam["Parameters"], "no second schedule setting to keep in step"
    assert int(parameter["MaxValue"]) * alarm["Period"] <= 86_400
    assert int(parameter["MinValue"]) >= 1
    assert "rate(N minutes)" in parameter["Description"], "document that it is the schedule"


def test_every_queue_has_an_alarm(cfn: dict[str, Any]) -> None:
    watched = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
               for a in alarms(cfn).values() if a["Namespace"] == "AWS/SQS"}
    assert watched == set(resources_of_type(cfn, "AWS::SQS::Queue"))


# ---------------------------------------------------------------------------
# Alarm topic, its key and the e-mail subscription
# ---------------------------------------------------------------------------
def _alarm_source_arn() -> dict[str, str]:
    return {"Fn::Sub": "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:${AWS::StackName}-*"}


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(cfn: dict[str, Any]) -> None:
    topic = cfn["Resources"]["AlarmTopic"]
    assert topic["Condition"] == "CreateAlarmTopic"
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
    key = cfn["Resources"]["AlarmTopicKey"]
    assert key["Condition"] == "CreateAlarmTopic"
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    (cloudwatch,) = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch["Effect"] == "Allow"
    assert sorted(cloudwatch["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                                       "ArnLike": {"aws:SourceArn": _alarm_source_arn()}}
    others = [s for s in statements if s is not cloudwatch]
    assert [s["Principal"] for s in others] == [
        {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}], "no other service may use it"


def test_alarm_topic_policy_admits_only_this_stacks_alarms(cfn: dict[str, Any]) -> None:
    (policy,) = [p for p in resources_of_type(cfn, "AWS::SNS::TopicPolicy").values()
                 if p["Properties"]["Topics"] == [{"Ref": "AlarmTopic"}]]
    assert policy["Condition"] == "CreateAlarmTopic"
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert allows == [{
        "Sid": allows[0]["Sid"], "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": "sns:Publish", "Resource": {"Ref": "AlarmTopic"},
        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                      "ArnLike": {"aws:SourceArn": _alarm_source_arn()}},
    }]
    assert any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements)


@pytest.mark.parametrize(
    ("overrides", "topic", "subscription"),
    [
        ({}, True, False),
        ({"AlarmEmail": EMAIL}, True, True),
        ({"AlarmTopicArn": EXISTING_TOPIC}, False, False),
    ],
    ids=["no-email", "email", "existing-topic"],
)
def test_alarm_topic_and_email_subscription_are_conditional(cfn: dict[str, Any], overrides: dict[str, str],
                                                            topic: bool, subscription: bool) -> None:
    created = resolved_resources(cfn, overrides)
    for lid in ("AlarmTopic", "AlarmTopicKey", "AlarmTopicKeyAlias", "AlarmTopicPolicy"):
        assert (lid in created) is topic, lid
    subscriptions = [r["Properties"] for r in created.values() if r["Type"] == "AWS::SNS::Subscription"]
    if subscription:
        assert subscriptions == [{"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email", "Endpoint": EMAIL}]
    else:
        assert subscriptions == []
    params = parameter_values(cfn, overrides)
    output = resolve(cfn["Outputs"]["AlarmNotificationTopicArn"]["Value"], evaluate_conditions(cfn, params), params)
    assert output == ({"Ref": "AlarmTopic"} if topic else EXISTING_TOPIC)


def _rule_holds(node: Any, params: dict[str, str]) -> bool:
    """Evaluates the Fn::Or / Fn::Equals subset of CloudFormation rule functions."""
    (fn, args), = node.items()
    if fn == "Fn::Or":
        return any(_rule_holds(a, params) for a in args)
    if fn == "Fn::Equals":
        left, right = (params[a["Ref"]] if isinstance(a, dict) else a for a in args)
        return left == right
    raise AssertionError(f"unsupported rule function {fn}")


def test_alarm_email_and_alarm_topic_arn_are_exclusive(sam: dict[str, Any]) -> None:
    (assertion,) = sam["Rules"]["AlarmEmailOrAlarmTopicArn"]["Assertions"]
    cases = {("", ""): True, (EMAIL, ""): True, ("", EXISTING_TOPIC): True, (EMAIL, EXISTING_TOPIC): False}
    for (email, topic), allowed in cases.items():
        params = {"AlarmEmail": email, "AlarmTopicArn": topic}
        assert _rule_holds(assertion["Assert"], params) is allowed, (email, topic)
    parameters = sam["Parameters"]
    assert parameters["AlarmEmail"]["Default"] == parameters["AlarmTopicArn"]["Default"] == ""
    assert re.fullmatch(parameters["AlarmEmail"]["AllowedPattern"], EMAIL)
    assert not re.fullmatch(parameters["AlarmEmail"]["AllowedPattern"], "not an address")
    assert re.fullmatch(parameters["AlarmTopicArn"]["AllowedPattern"], EXISTING_TOPIC)


# ---------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------
def dashboard_body(cfn: dict[str, Any], overrides: dict[str, str] | None = None
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """The DashboardBody JSON of a stack deployed with `overrides`: its !Sub variables resolved (the
    optional features' lines), parameters at their values and other ${...} as dummies; and the map."""
    (dashboard,) = resources_of_type(cfn, "AWS::CloudWatch::Dashboard").values()
    sub = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    text, variables = (sub, {}) if isinstance(sub, str) else sub
    assert isinstance(text, str), "DashboardBody: one !Sub string (with variables for optional features)"
    params = parameter_values(cfn, overrides)
    conditions = evaluate_conditions(cfn, params)
    for name, value in variables.items():
        value = resolve(value, conditions, params)
        value = value["Fn::Sub"] if isinstance(value, dict) else value
        assert isinstance(value, str), f"dashboard variable {name}: a string or a !Sub of one"
        text = text.replace("${" + name + "}", value)
    deployed = set(resolved_resources(cfn, overrides)) | set(cfn["Parameters"]) | PSEUDO_PARAMETERS
    placeholders = {}
    for name in set(re.findall(r"\$\{([^}!]+)\}", text)):
        assert name.split(".")[0] in deployed, f"dashboard refers to ${{{name}}}, which this stack does not have"
        placeholders[name] = (str(cfn["Parameters"][name].get("Default", "60")) if name in cfn["Parameters"]
                              else f"dummy-{name.replace('::', '-')}")
    body = json.loads(re.sub(r"\$\{([^}!]+)\}", lambda m: placeholders[m.group(1)], text))
    return body, {value: name for name, value in placeholders.items()}


def widget_metrics(widget: dict[str, Any]) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """(namespace, metric, [dimension name, value, ...], options) of a metric widget, '.' shorthand resolved."""
    out, previous = [], []
    for row in widget["properties"].get("metrics", []):
        options = row[-1] if isinstance(row[-1], dict) else {}
        fields = [f for f in row if not isinstance(f, dict)]
        if "expression" in options:
            continue
        fields = [previous[i] if f == "." and i < len(previous) else f for i, f in enumerate(fields)]
        previous = fields
        out.append((fields[0], fields[1], fields[2:], options))
    return out


@pytest.mark.parametrize("features", FEATURES, ids=["default", "digest"])
def test_dashboard_refers_only_to_emitted_metrics_and_this_stack(cfn: dict[str, Any], powertools: tuple[str, str],
                                                                 emitted_metrics: set[str], features) -> None:
    body, names = dashboard_body(cfn, features)
    namespace, service = powertools
    seen = set()
    for widget in body["widgets"]:
        assert widget["type"] in {"metric", "alarm", "text"}, widget["type"]
        assert 0 <= widget["x"] and widget["x"] + widget["width"] <= 24
        if widget["type"] != "metric":
            continue
        properties = widget["properties"]
        assert names[properties["region"]] == "AWS::Region"
        assert widget_metrics(widget), properties["title"]
        for ns, metric, dimensions, _ in widget_metrics(widget):
            if ns == namespace:
                assert metric in emitted_metrics, f"{properties['title']}: {metric} is not emitted by the code"
                assert dimensions == ["service", service], f"{metric}: the EMF dimension is service={service}"
            elif ns == "AWS/Lambda":
                assert metric in {"Errors", "Throttles", "Invocations", "Duration"}
                assert dimensions[0] == "FunctionName"
                assert names[dimensions[1]] in {"CollectorFunction", "DifferFunction", "DigestFunction"}
                seen.add(f"{metric} of {names[dimensions[1]]}")
            elif ns == "AWS/SQS":
                assert metric == "ApproximateNumberOfMessagesVisible"
                assert dimensions[0] == "QueueName"
                queue, attribute = names[dimensions[1]].split(".")
                assert attribute == "QueueName" and cfn["Resources"][queue]["Type"] == "AWS::SQS::Queue"
            else:
                raise AssertionError(f"unexpected namespace {ns}")
            seen.add(metric)
    # What the issue asks the dashboard to show.
    assert {"Devices", "KandjiRequests", "RunDuration", "RefreshedDevices", "CarriedDevices", "PendingDevices",
            "HighSeverityEvents", "ChangeEvents", "Errors", "ApproximateNumberOfMessagesVisible"} <= seen
    assert {m for m in emitted_metrics if m.startswith("Events")} <= seen, "changes per run by every type"
    functions = {"CollectorFunction", "DifferFunction"} | ({"DigestFunction"} if features else set())
    assert {name for name in seen if name.startswith("Errors of ")} == {f"Errors of {f}" for f in functions}


def test_dashboard_shows_requests_against_the_hourly_limit_and_the_run_budget(cfn: dict[str, Any]) -> None:
    from kandji_snapshots.settings import DEFAULT_REQUEST_BUDGET

    body, _ = dashboard_body(cfn)
    (widget,) = [w for w in body["widgets"] if w["type"] == "metric"
                 and any(m[1] == "KandjiRequests" for m in widget_metrics(w))]
    lines = {a["value"] for a in widget["properties"]["annotations"]["horizontal"]}
    assert lines == {10_000, DEFAULT_REQUEST_BUDGET}


@pytest.mark.parametrize("features", FEATURES, ids=["default", "digest"])
def test_dashboard_shows_the_state_of_every_alarm(cfn: dict[str, Any], features) -> None:
    body, names = dashboard_body(cfn, features)
    (widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    shown = [names[arn] for arn in widget["properties"]["alarms"]]
    assert sorted(shown) == sorted(f"{lid}.Arn" for lid in expected_alarms(features))


def test_dashboard_url_output(cfn: dict[str, Any]) -> None:
    url = cfn["Outputs"]["OperationsDashboardUrl"]["Value"]["Fn::Sub"]
    assert "#dashboards:name=${OperationsDashboard}" in url


# ---------------------------------------------------------------------------
# checkov (run once per session: conftest.py checkov_reports)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["sam", "transformed"])
def test_checkov_passes_the_alarm_resources(checkov_reports: dict[str, dict[str, Any]], form: str) -> None:
    results = checkov_reports[form]["results"]
    assert results["failed_checks"] == []
    passed = {(c["check_id"], c["resource"]) for c in results["passed_checks"]}
    assert ("CKV_AWS_26", "AWS::SNS::Topic.AlarmTopic") in passed, "the alarm topic is encrypted"
    assert ("CKV_AWS_7", "AWS::KMS::Key.AlarmTopicKey") in passed, "its key rotates"
    assert ("CKV_AWS_33", "AWS::KMS::Key.AlarmTopicKey") in passed, "its key policy has no wildcard principal"
    skipped = {c["resource"] for c in results["skipped_checks"]}
    assert not {r for r in skipped if "Alarm" in r or "Dashboard" in r}, "nothing of the alarms is skipped"


def test_checkov_ran_once_for_this_module_and_the_security_tests(checkov_reports: dict[str, dict[str, Any]],
                                                                 tmp_path_factory) -> None:
    from session_once import times_produced

    # a second scan (here or on another xdist worker) would mean the fixture is not session-wide after all
    assert times_produced(tmp_path_factory, "checkov") == 1
