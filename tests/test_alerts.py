"""What each kind of subscriber receives: the differ handler against moto, per protocol.

SQS/Lambda/HTTP get the JSON event exactly as before; e-mail gets plain text; every message
has an SNS Subject within SNS's rules; the chat topic gets custom notifications that Amazon Q
Developer in chat applications renders (checked against its documented schema below).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import boto3
import pytest
from aws_helpers import BUCKET, drain_queue, read_object, subscribe_queue
from conftest import load_handler
from differ_fixtures import FakeFleet
from handler_pipeline import manifest_event
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sns.models import sns_backends
from sns_messages import SECRET_LOOKING, check_subject, delivered

from kandji_snapshots.diff.messages import (
    SUBJECT_MAX_CHARS,
    MessageContext,
    ascii_text,
    device_history_sql,
    event_email,
    event_subject,
    subject,
)
from kandji_snapshots.diff.publisher import MAX_BATCH_BYTES, ChatPublisher, MemoryPublisher, PublishError, event_message
from kandji_snapshots.inert_text import NAME_MAX_CHARS
from kandji_snapshots.snapshots.layout import changes_key, manifest_key
from kandji_snapshots.snapshots.storage import S3ObjectStore

REGION = "us-east-1"
WORKGROUP, DATABASE = "kandji-snapshots-fleet", "kandji_snapshots"
SECOND = "20261123T110000Z"  # the second of the two snapshots diff_two_snapshots collects


# --- the documented schema ------------------------------------------------------------
# Amazon Q Developer in chat applications, "Custom notifications" (docs.aws.amazon.com/chatbot/latest/
# adminguide/custom-notifs.html): version "1.0" and source "custom" required; content required with
# description required, textType "client-markdown" optional, title optional, nextSteps and keywords
# optional lists of strings; id optional string; metadata optional: threadId, summary, eventType
# strings, relatedResources list of strings, additionalContext string map, enableCustomActions bool.
CHAT_SCHEMA = {
    "required": {"version": str, "source": str, "content": dict},
    "optional": {"id": str, "metadata": dict},
    "constants": {"version": "1.0", "source": "custom"},
    "content": {"required": {"description": str},
                "optional": {"textType": str, "title": str, "nextSteps": list, "keywords": list}},
    "metadata": {"optional": {"threadId": str, "summary": str, "eventType": str, "relatedResources": list,
                              "additionalContext": dict, "enableCustomActions": bool}},
}


def check_chat_notification(document: dict) -> None:
    """Fails (AssertionError) unless `document` follows the documented custom-notification schema."""
    def check(obj: dict, spec: dict, where: str) -> None:
        allowed = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(obj) <= set(allowed), f"{where}: unknown fields {set(obj) - set(allowed)}"
        for name, kind in spec.get("required", {}).items():
            assert name in obj, f"{where}.{name} is required"
        for name, value in obj.items():
            assert isinstance(value, allowed[name]), f"{where}.{name} must be {allowed[name].__name__}"
            if allowed[name] is list:
                assert all(isinstance(item, str) for item in value), f"{where}.{name} must list strings"

    check(document, CHAT_SCHEMA, "$")
    for name, value in CHAT_SCHEMA["constants"].items():
        assert document[name] == value, f"$.{name} must be {value!r}"
    check(document["content"], CHAT_SCHEMA["content"], "$.content")
    assert document["content"].get("textType", "client-markdown") == "client-markdown"
    assert document["content"]["description"].strip()
    if "metadata" in document:
        check(document["metadata"], CHAT_SCHEMA["metadata"], "$.metadata")
        assert all(isinstance(value, str) for value in document["metadata"].get("additionalContext", {}).values())


def test_the_schema_check_rejects_what_the_docs_do_not_allow():
    good = {"version": "1.0", "source": "custom", "content": {"description": "x"}}
    check_chat_notification(good)
    for bad in ({**good, "version": "2.0"}, {**good, "source": "aws"}, {**good, "content": {"title": "x"}},
                {**good, "content": {"description": "x", "nextSteps": "do it"}}, {**good, "extra": 1},
                {**good, "metadata": {"threadId": 7}}):
        with pytest.raises(AssertionError):
            check_chat_notification(bad)


# --- through the differ handler ---------------------------------------------------------

@pytest.fixture
def subscribers(aws, monkeypatch):
    """Changes topic and chat topic in moto, with the queues that show what subscribers get."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="kandji-changes")["TopicArn"]
    chat_arn = sns.create_topic(Name="kandji-chat")["TopicArn"]
    urls = {"raw": subscribe_queue(topic_arn, "raw"), "envelope": subscribe_queue(topic_arn, "envelope", raw=False),
            "high": subscribe_queue(topic_arn, "high", filter_policy={"severity": ["high"]}),
            "chat": subscribe_queue(chat_arn, "chat")}
    sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint="it-security@example.com")
    environment = {"SNAPSHOT_BUCKET": BUCKET, "CHANGES_TOPIC_ARN": topic_arn, "CHAT_TOPIC_ARN": chat_arn,
                   "ATHENA_WORKGROUP": WORKGROUP, "ATHENA_DATABASE": DATABASE, "MAX_EVENTS_PER_RUN": "100"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DIFF_IGNORE_FIELDS", raising=False)

    def published(topic: str) -> list[tuple[str, str]]:
        """(Message, Subject) as published to `topic`, read from moto's backend (in this process)."""
        topic_object = sns_backends[DEFAULT_ACCOUNT_ID][REGION].topics[topic]
        return [(message, subject) for _, message, subject, *_ in topic_object.sent_notifications]

    return SimpleNamespace(drain=lambda name: drain_queue(urls[name], sqs), topic_arn=topic_arn, chat_arn=chat_arn,
                           published=published)


def diff_two_snapshots(lambda_context, device_name: str = "Noah\u2019s MacBook Pro", user=None,
                       app_name: str | None = None) -> list[dict]:
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(3)
    fleet.devices["id-001"]["device_name"] = device_name
    if user is not None:
        fleet.devices["id-001"]["user"] = user
    if app_name is not None:
        fleet.apps["id-002"][0]["app_name"] = app_name
    fleet.collect(store, hour=10)
    fleet.check_in()
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    fleet.apps["id-002"][0]["version"] = "121.0"
    fleet.collect(store, hour=11)
    load_handler("differ").lambda_handler(manifest_event(manifest_key(SECOND)), lambda_context)
    return [json.loads(line) for line in read_object(changes_key(SECOND), BUCKET).splitlines()]


def test_sqs_subscribers_receive_the_json_event_exactly_as_written(subscribers, lambda_context):
    events = diff_two_snapshots(lambda_context)
    raw = subscribers.drain("raw")
    bodies = [json.loads(message["Body"]) for message in raw]
    # moto delivers a JSON-structured message's `sqs` key, else `default`: the event itself.
    assert bodies[:-1] == events and bodies[-1]["change_type"] == "snapshot_summary"
    assert all("default" not in body and "email" not in body for body in bodies)
    assert {name: value["StringValue"] for name, value in raw[0]["MessageAttributes"].items()} == {
        "change_type": "device_changed", "severity": "high", "platform": "Mac"}
    # Filter policies on the attributes still select as before.
    assert [json.loads(m["Body"])["event_id"] for m in subscribers.drain("high")] == [
        events[0]["event_id"], bodies[-1]["event_id"]]


def test_every_message_has_a_subject_within_snss_rules(subscribers, lambda_context):
    name = "Zo\u00eb \U0001F680 \u674e\u96f7\n" + SECRET_LOOKING + "x" * 300  # emoji, CJK, newline, far too long
    diff_two_snapshots(lambda_context, device_name=name)
    envelopes = [json.loads(message["Body"]) for message in subscribers.drain("envelope")]
    subjects = [envelope["Subject"] for envelope in envelopes]
    assert len(subjects) == 3
    for text in subjects:
        check_subject(text)
    assert subjects[0].startswith("[high] FileVault turned off on Zoe ? ?? kandji-api-token")
    assert subjects[0].endswith("(C02ID-001, Ann)")  # the serial (and here the user) survive the cut
    assert subjects[1] == "[info] Google Chrome updated 120.0 -> 121.0 on Mac id-002 (C02ID-002, Ann)"
    assert subjects[2].startswith("[high] Snapshot 20261123T110000Z: 2 changes on 3 devices")
    # The envelope's Message is the JSON event too.
    assert json.loads(envelopes[1]["Message"])["change_type"] == "app_updated"


def test_email_subscribers_get_a_plain_text_alert(subscribers, lambda_context):
    events = diff_two_snapshots(lambda_context)
    [(message, subject_line), *_] = subscribers.published(subscribers.topic_arn)
    assert subject_line == "[high] FileVault turned off on Noah's MacBook Pro (C02ID-001, Ann)"
    email = delivered(message, True, "email")
    assert json.loads(delivered(message, True, "sqs")) == events[0]
    assert json.loads(delivered(message, True, "lambda")) == events[0]
    assert email.startswith("FileVault turned off on Noah\u2019s MacBook Pro (C02ID-001).\n")
    lines = email.splitlines()
    assert lines[2:5] == ["Severity:  high (device_changed)",
                          "Device:    Noah\u2019s MacBook Pro, serial C02ID-001, Mac",
                          "User:      Ann <ann@example.com>"]  # what a person needs, at the top
    assert lines[6:8] == ["What changed (before -> after):",
                          "  filevault.filevault_enabled: true -> false   [high: FileVault turned off]"]
    for line in (f"Next:      this device's change history in Athena (workgroup {WORKGROUP}, database {DATABASE}): "
                 "the saved query \"Kandji: change history of one device\" with serial C02ID-001 "
                 "(its SQL is at the end)",
                 f"Snapshot:  {SECOND} (compared with 20261123T100000Z)", "Device id: id-001"):
        assert line in lines, line
    assert lines.index("SELECT") > lines.index("Device id: id-001")
    assert "AND c.serial_number = 'C02ID-001'" in email and "C02XXXXXXXXX" not in email
    assert not email.lstrip().startswith("{")


def test_a_device_without_a_user_says_so_in_the_email_and_the_chat(subscribers, lambda_context):
    events = diff_two_snapshots(lambda_context, user="")  # Kandji lists a device with no user as ""
    assert events[0]["user"] is None
    [(message, subject_line), *_] = subscribers.published(subscribers.topic_arn)
    assert subject_line == "[high] FileVault turned off on Noah's MacBook Pro (C02ID-001)"
    assert "User:      (no user assigned)" in delivered(message, True, "email").splitlines()
    [event_card, _] = [json.loads(message["Body"]) for message in subscribers.drain("chat")]
    assert "*User:* `(no user assigned)`" in event_card["content"]["description"].splitlines()


def test_the_chat_topic_gets_high_severity_events_and_summaries_as_custom_notifications(subscribers, lambda_context):
    events = diff_two_snapshots(lambda_context)
    chat = [json.loads(message["Body"]) for message in subscribers.drain("chat")]
    assert [document["id"] for document in chat] == [events[0]["event_id"], chat[-1]["id"]]  # info app update left out
    for document in chat:
        check_chat_notification(document)
    event_card, summary_card = chat
    assert event_card["content"]["title"] == (":rotating_light: [high] FileVault turned off on Noah's MacBook Pro "
                                              "(C02ID-001, Ann)")
    assert "*User:* `Ann (ann@example.com)`" in event_card["content"]["description"].splitlines()
    assert ("- `filevault.filevault_enabled`: `true` -> `false` (FileVault turned off)"
            in event_card["content"]["description"].splitlines())
    assert "`C02ID-001`" in event_card["content"]["nextSteps"][0]
    assert "*2 changes* on 3 devices" in summary_card["content"]["description"]
    for _, subject_line in subscribers.published(subscribers.chat_arn):
        check_subject(subject_line)


# A user renames their Mac (or an app): line breaks, a bidi override and Markdown, to forge an alert's lines.
FORGED_NAME = ("MacBook\n\nSeverity:  info\nNo action needed: this is a test.\r\n\u202eelif.exe\u202c\n"
               "*User:* Trusted Admin\n[Open the Kandji console](https://evil.example/login) " + "x" * 300)


def outside_code_spans(markdown: str) -> str:
    return re.sub(r"`[^`\n]*`", "", markdown)


def test_a_forged_device_or_app_name_is_one_inert_bounded_line_in_email_and_chat(subscribers, lambda_context):
    diff_two_snapshots(lambda_context, device_name=FORGED_NAME, app_name="Chrome\nSeverity:  high\u202e")
    [(device_message, _), (app_message, _), _] = subscribers.published(subscribers.topic_arn)
    email = delivered(device_message, True, "email")
    lines = email.splitlines()
    assert [line for line in lines if line.startswith("Severity:")] == ["Severity:  high (device_changed)"]
    assert not any(line.startswith(("No action needed", "*User:*", "[Open")) for line in lines)
    assert "\u202e" not in email and "\r" not in email
    [device_line] = [line for line in lines if line.startswith("Device:")]
    assert device_line.startswith("Device:    MacBook Severity: info No action needed")
    name = device_line[len("Device:    "):].split(", serial ")[0]
    assert name.endswith("\u2026") and len(name) == NAME_MAX_CHARS  # cut, like every name
    assert len(lines[0]) < 200  # the headline line names the device cut too
    app_email = delivered(app_message, True, "email")
    assert [line for line in app_email.splitlines()
            if line.startswith("Severity:")] == ["Severity:  info (app_updated)"]
    assert "\u202e" not in app_email

    [event_card, _] = [json.loads(message["Body"]) for message in subscribers.drain("chat")]
    description = event_card["content"]["description"]
    assert "\u202e" not in json.dumps(event_card, ensure_ascii=False)
    assert [line for line in description.splitlines()
            if line.startswith("*User:*")] == ["*User:* `Ann (ann@example.com)`"]
    assert "](" not in outside_code_spans(description) and "evil.example" not in outside_code_spans(description)
    for text in (event_card["content"]["title"], event_card["metadata"]["summary"]):
        assert "](" not in text and "*" not in text and "\n" not in text


def test_a_failing_chat_topic_publishes_nothing_to_the_changes_topic():
    class Failing:
        def publish_batch(self, messages):
            raise PublishError("chat topic gone")

    primary = MemoryPublisher()
    message = event_message(big_event(severity="high"), "s3://b/changes/x.json.gz")
    with pytest.raises(PublishError, match="Chat notifications: chat topic gone.*Nothing of this batch"):
        ChatPublisher(primary, Failing()).publish_batch([message])
    assert primary.batches == []


# --- moto's delivery of JSON-structured messages, checked ------------------------------

def test_moto_delivers_the_sqs_key_else_default_to_sqs():
    with mock_aws():
        sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
        topic = sns.create_topic(Name="t")["TopicArn"]
        url = subscribe_queue(topic, "q")
        for structure in ({"default": "D", "sqs": "S", "email": "E"}, {"default": "D", "email": "E"}):
            sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
                {"Id": "1", "Message": json.dumps(structure), "MessageStructure": "json", "Subject": "s"}])
        assert [m["Body"] for m in drain_queue(url, sqs)] == ["S", "D"]


# --- sizes, subjects, text ----------------------------------------------------------------

def big_event(*, severity: str = "info", value_bytes: int = 0, changes: int = 1) -> dict:
    return {"schema_version": 1, "event_id": "e" * 32, "change_type": "device_changed", "severity": severity,
            "snapshot_id": SECOND, "previous_snapshot_id": "20261123T100000Z", "device_id": "id-1",
            "device_name": "Mac 1", "serial_number": "C021", "platform": "Mac",
            "changes": [{"field": f"f{index}", "before": None, "after": "y" * value_bytes, "severity": severity}
                        for index in range(changes)]}


def test_the_whole_structured_message_stays_within_256_kib():
    event = big_event(value_bytes=MAX_BATCH_BYTES - 600)  # the JSON alone fits; with the e-mail text it would not
    message = event_message(event, "s3://b/changes/x.json.gz", context=MessageContext(WORKGROUP, DATABASE))
    assert message.size <= MAX_BATCH_BYTES
    assert len(message.wire_message.encode()) + len(message.subject.encode()) <= MAX_BATCH_BYTES
    assert json.loads(message.body)["truncated"] is True and message.email and message.structured
    structure = json.loads(message.wire_message)
    assert set(structure) == {"default", "email"} and structure["default"] == message.body
    # Long values are cut in the e-mail, whatever the event holds.
    assert len(message.email) < 4000 and "yyy\u2026" in message.email


def test_a_json_heavy_event_is_measured_escaped():
    # Quotes double in the structure (\"): the size counts the structure, not the bare event.
    event = big_event(changes=4000)
    message = event_message(event, "s3://b/changes/x.json.gz")
    assert message.size == len(message.wire_message.encode()) + len(message.subject) + sum(
        len(name) + len("String") + len(value) for name, value in message.attributes.items())
    assert message.size <= MAX_BATCH_BYTES and len(message.wire_message) > len(message.body)


@pytest.mark.parametrize("name, expected", [
    ("Noah\u2019s MacBook Pro", "[high] FileVault turned off on Noah's MacBook Pro (S1)"),
    ("Ren\u00e9e\u2014Mac", "[high] FileVault turned off on Renee-Mac (S1)"),
    ("\u674e\u96f7\u7684Mac", "[high] FileVault turned off on ???Mac (S1)"),
    ("tab\there\r\nnewline", "[high] FileVault turned off on tab here newline (S1)"),
])
def test_subjects_are_ascii_and_transliterated(name, expected):
    event = big_event(severity="high")
    event.update(device_name=name, serial_number="S1",
                 changes=[{"field": "filevault.filevault_enabled", "before": True, "after": False, "severity": "high",
                           "reason": "FileVault turned off"}])
    assert event_subject(event) == expected
    check_subject(event_subject(event))


def test_subjects_never_exceed_the_limit():
    for headline in ("", "x" * 500, "\n\n", "\u2603" * 200):
        for device in ("", "d" * 500, "\u00e9" * 200):
            text = subject("high", headline, device)
            check_subject(text)
            assert len(text) <= SUBJECT_MAX_CHARS
    assert ascii_text("Zo\u00eb\x00\nMac\u2603") == "Zoe Mac?"
    check_subject(subject("info", "  \x07 leading junk"))


def test_the_device_history_sql_quotes_the_serial():
    assert "c.serial_number = 'O''BRIEN'" in device_history_sql("O'BRIEN")


def test_removed_and_app_events_read_well_by_email():
    event = big_event(severity="high")
    event.update(change_type="device_removed", apps=[{"app_name": "Safari"}], user={"name": "Noah", "email": "n@x.io"})
    event.pop("changes")
    text = event_email(event)
    assert "Device removed on Mac 1 (C021)." in text and "no longer listed by Kandji (1 apps)" in text
    assert "User:      Noah <n@x.io>" in text
