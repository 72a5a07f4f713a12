"""`make local`: the whole pipeline on this machine, no AWS account, no Kandji tenant.

A Kandji API simulator (a real HTTP server on 127.0.0.1) plays the tenant; moto's
server plays AWS (S3, Secrets Manager, SNS, SQS) through the standard
AWS_ENDPOINT_URL. The real Lambda handlers run against them:

  baseline snapshot -> change the fleet -> second snapshot -> diff -> what subscribers and people get
  -> copy the bucket to ./local-data and answer fleet questions with DuckDB
  -> build the Parquet history copy there and answer a history question from it

Devices are named as people see them, name and serial; values are printed as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT)]

TOKEN = "local-run-token-not-a-secret"
EMAIL_SHOWN_CHANGES = 2  # the example e-mail is shown with its first changed fields (the high ones come first)
BUCKET = "kandji-snapshots-local"


@dataclass
class LocalContext:
    """The parts of the Lambda context the handlers use."""

    function_name: str
    remaining_ms: int = 900_000
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "local-run"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_handler(function: str):
    spec = importlib.util.spec_from_file_location(f"{function}_app", ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def start_local_aws() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def configure_environment(endpoint: str) -> None:
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint,  # every boto3 client goes to moto
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "kandji-snapshots", "POWERTOOLS_METRICS_NAMESPACE": "KandjiSnapshots",
        "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "1",  # no EMF blobs on the terminal
        "KANDJI_ALLOW_INSECURE_LOCALHOST": "true",  # the simulator speaks plain http on 127.0.0.1
        "KANDJI_MAX_REQUESTS_PER_SECOND": "500",  # the simulator has no 50/s limit here
        "SNAPSHOT_BUCKET": BUCKET,
    })
    os.environ.pop("AWS_PROFILE", None)


def create_resources(api_url: str) -> dict[str, str]:
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    secret = boto3.client("secretsmanager").create_secret(
        Name="kandji-snapshots/api-token", SecretString=json.dumps({"api_url": api_url, "api_token": TOKEN}))
    topic = boto3.client("sns").create_topic(Name="kandji-snapshots-changes")["TopicArn"]
    os.environ["KANDJI_SECRET_ID"] = secret["ARN"]
    os.environ["CHANGES_TOPIC_ARN"] = topic
    # Two subscribers, as a consumer of the change events would set them up: everything, and high severity only.
    return {"all-changes": subscribe_queue(topic, "all-changes"),
            "high-severity": subscribe_queue(topic, "high-severity", FilterPolicy=json.dumps({"severity": ["high"]}))}


def subscribe_queue(topic: str, name: str, **attributes: str) -> str:
    """A new SQS queue receiving the topic's messages as published (raw delivery); returns its URL."""
    import boto3

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                                  Attributes={"RawMessageDelivery": "true", **attributes})
    return url


def manifest_event(key: str) -> dict:
    event = json.loads((ROOT / "events" / "manifest_created_event.json").read_text())
    event["detail"]["bucket"]["name"] = BUCKET
    event["detail"]["object"]["key"] = key
    return event


def collect(handler) -> dict:
    from kandji_snapshots.snapshots.layout import manifest_key

    started = time.monotonic()
    event = json.loads((ROOT / "events" / "scheduler_event.json").read_text())
    result = handler(event, LocalContext("collector"))
    print(f"  snapshot {result['snapshot_id']}: {result['devices']} devices, "
          f"{result['skipped_devices']} skipped, in {time.monotonic() - started:.1f} s")
    result["manifest_key"] = manifest_key(result["snapshot_id"])
    return result


def wait_for_next_second() -> None:
    """Snapshot ids have one-second resolution: two runs must start in different seconds."""
    time.sleep(1.05 - (time.time() % 1))


def receive_all(queue_url: str) -> list[dict]:
    import boto3

    sqs, messages = boto3.client("sqs"), []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return messages
        messages.extend(json.loads(message["Body"]) for message in batch)
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(batch)])


def device(name: str | None, serial: str | None) -> str:
    """A device as people see it everywhere in this run: its name and serial."""
    return f"{name or '(no name)'} ({serial or 'no serial'})"


def describe(event: dict) -> str:
    if event["change_type"] == "snapshot_summary":
        counts = ", ".join(f"{name} {count}" for name, count in sorted(event.get("counts", {}).items()) if count)
        what = "baseline: nothing to compare with" if event.get("first_snapshot") else counts or "no changes"
        return f"snapshot_summary  {event['snapshot_id']}: {what}"
    what = ""
    if event.get("changes"):
        shown = sorted(event["changes"], key=lambda change: not change.get("reason"))[:2]  # the raised ones first
        what = "; ".join(f"{change['field']}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}"
                         for change in shown)
        if len(event["changes"]) > len(shown):
            what += f"; +{len(event['changes']) - len(shown)} more fields"
    elif event.get("app"):
        app = event["app"]
        before = f"{json.dumps(app.get('previous_version'))} -> " if app.get("previous_version") else ""
        what = (f"app {json.dumps(app.get('app_name'))} ({app.get('bundle_id')}) "
                f"{before}{json.dumps(app.get('version'))}")
    elif event.get("apps") is not None:
        what = f"{len(event['apps'])} apps"
    return (f"{event['change_type']:<15} {event['severity']:<4}  {event.get('platform') or '':<8} "
            f"{device(event.get('device_name'), event.get('serial_number'))}  {what}")


def download_bucket(target: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            path = target / item["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())


def answer_fleet_questions(folder: Path, serial_number: str, bundle_id: str) -> None:
    from kandji_snapshots.query import local_duckdb

    local_duckdb.print_report(folder, limit=5, parameters={"serial_number": serial_number, "bundle_id": bundle_id})


def answer_history_question(folder: Path, device_id: str, label: str) -> None:
    """The columnar history copy, built as Athena builds it (one copy per committed snapshot), and one question."""
    from kandji_snapshots.history import local_copy
    from kandji_snapshots.query import local_duckdb

    copied = local_copy.build(folder)
    print(f"  copied {len(copied)} snapshot tables into Parquet under {folder / 'history'}")
    rows = local_copy.run_history_query(folder, "device_posture_history", device_id=device_id)
    print(f"\n== Kandji: FileVault and firewall history of {label}: {len(rows)} rows")
    print(local_duckdb.format_table(rows))


# --- what people receive: e-mail and chat (issue 14) ----------------------------------------

def create_chat_topic() -> str:
    """A chat topic (as ChatNotifications=Enabled creates) with a queue standing in for the chat service."""
    import boto3

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="kandji-snapshots-chat")["TopicArn"]
    url = sqs.create_queue(QueueName="chat-channel")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    os.environ["CHAT_TOPIC_ARN"] = topic
    os.environ.setdefault("ATHENA_WORKGROUP", "kandji-snapshots-fleet")
    os.environ.setdefault("ATHENA_DATABASE", "kandji_snapshots")
    return url


def print_what_people_receive(chat_queue_url: str) -> None:
    """One e-mail (the `email` variant of a published JSON-structured message) and one chat notification."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends

    topic = sns_backends[DEFAULT_ACCOUNT_ID][os.environ["AWS_DEFAULT_REGION"]].topics[os.environ["CHANGES_TOPIC_ARN"]]
    published = [(json.loads(message), subject) for _, message, subject, *_ in topic.sent_notifications]
    # The most telling example: a high-severity device change (FileVault turned off) if there is one.
    rank = {("device_changed", "high"): 0, ("device_removed", "high"): 1}
    structure, subject = min(published, key=lambda item: rank.get(
        (json.loads(item[0]["default"]).get("change_type"), json.loads(item[0]["default"]).get("severity")), 2))
    print(f"  e-mail subscriber: {len(published)} e-mails this run (every message has a Subject), e.g.:")
    print(f"    Subject: {subject}")
    for line in email_head(structure["email"]):
        print(f"    | {line}")
    cards = receive_all(chat_queue_url)
    print(f"\n  chat channel (Amazon Q Developer in chat applications): {len(cards)} notifications "
          "(high-severity events and the summaries), e.g.:")
    if cards:
        content = min(cards, key=lambda card: card["metadata"]["eventType"] != "device_changed")["content"]
        print(f"    {content['title']}")
        for line in content["description"].splitlines():
            print(f"    {line}")
        for step in content.get("nextSteps", []):
            print(f"    next: {step}")


def email_head(email: str) -> list[str]:
    """The e-mail as a person reads it, with its first changed fields only (the raised ones come first), and
    without the SQL of the device's change history at its end."""
    text = email.split("\nSELECT\n", 1)[0]
    lines, changes = [], [line for line in text.splitlines() if line.startswith("  ")]
    for line in text.splitlines():
        if line.startswith("  ") and line not in changes[:EMAIL_SHOWN_CHANGES]:
            if line == changes[EMAIL_SHOWN_CHANGES]:
                lines.append(f"  (shortened here: {len(changes) - EMAIL_SHOWN_CHANGES} more changed fields)")
            continue
        lines.append(line)
    return lines + ["(then the SQL of the saved query, for this serial)"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=int(os.environ.get("DEVICES") or 1200))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "local-data")
    args = parser.parse_args()

    from simulator import Fleet, KandjiSimulator

    server, endpoint = start_local_aws()
    configure_environment(endpoint)
    fleet = Fleet.generate(args.devices, seed=args.seed)
    platforms = ", ".join(dict.fromkeys(item["platform"] for item in fleet.list_items(ordering=None)))
    print(f"kandji-snapshots local run: a simulated fleet of {args.devices} devices ({platforms}), AWS from moto\n")
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        queues = create_resources(sim.api_url)
        chat_queue = create_chat_topic()
        print(f"Kandji API simulator: {sim.api_url}\nlocal AWS endpoint:   {endpoint}\n")
        collector, differ = load_handler("collector"), load_handler("differ")

        print("1. The baseline: a first snapshot (nothing to compare it with yet)")
        first = collect(collector)
        differ(manifest_event(first["manifest_key"]), LocalContext("differ"))

        print("\n2. The fleet changes")
        listed = {item["device_id"]: item for item in fleet.list_items()}  # the removed device's name, too
        changes = fleet.apply_demo_changes()
        listed.update({item["device_id"]: item for item in fleet.list_items()})
        for name in ("enrolled", "removed", "os_updated", "app_installed", "app_updated", "filevault_disabled"):
            item = listed[changes[name]["device_id"]]
            what = changes[name]
            detail = (f": {what['field']} {json.dumps(what['before'])} -> {json.dumps(what['after'])}"
                      if "before" in what and "field" in what else "")
            print(f"  {name:<19} {device(item['device_name'], item['serial_number'])}{detail}")
        print(f"  every device checked in again ({changes['checked_in']} devices)")

        print("\n3. A second snapshot, then the differ compares it with the baseline")
        wait_for_next_second()
        second = collect(collector)
        result = differ(manifest_event(second["manifest_key"]), LocalContext("differ"))
        print(f"  differ: {json.dumps(result)}")

        print("\n4. What the queues subscribed to the changes topic received")
        for name, url in queues.items():
            messages = receive_all(url)
            label = "no filter" if name == "all-changes" else "filter policy {\"severity\": [\"high\"]}"
            print(f"  queue {name} ({label}): {len(messages)} messages")
            for message in sorted(messages, key=lambda m: (m["change_type"] == "snapshot_summary", m["snapshot_id"])):
                print(f"    {describe(message)}")

        print("\n5. What people receive: an e-mail and a chat notification")
        print_what_people_receive(chat_queue)

        print(f"\n6. Snapshots in s3://{BUCKET} (copied to {args.output})")
        shutil.rmtree(args.output, ignore_errors=True)  # the bucket is new every run; so is the copy
        download_bucket(args.output)
        for path in sorted(args.output.rglob("*")):
            if path.is_file() and second["snapshot_id"] in str(path):
                print(f"  {path.relative_to(args.output)}  ({path.stat().st_size:,} bytes)")

        print("\n7. Fleet questions, answered with DuckDB over the local copy")
        serial_number = fleet.list_item(changes["filevault_disabled"]["device_id"])["serial_number"]
        answer_fleet_questions(args.output, serial_number, changes["app_updated"]["bundle_id"])

        print("\n8. History, answered from the columnar (Parquet) copy")
        turned_off = fleet.list_item(changes["filevault_disabled"]["device_id"])
        answer_history_question(args.output, turned_off["device_id"],
                                device(turned_off["device_name"], turned_off["serial_number"]))
    server.stop()
    print(f"\nDone. Ask again, for example: .venv/bin/kandji-snapshots query {display_path(args.output)} --query "
          f"device_change_history --param serial_number={serial_number}")
    print("Deploy to your AWS account (AWS credentials and Python 3.13 needed; docs/deploy.md):\n"
          "  make sam-cli && .venv-sam/bin/sam build && .venv-sam/bin/sam deploy --guided")
    return 0


def display_path(path: Path) -> str:
    """The folder as the operator can type it from the repository."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
