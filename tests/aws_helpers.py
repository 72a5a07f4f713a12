"""Setting up the pipeline's AWS resources in moto and reading back what the handlers wrote."""

from __future__ import annotations

import gzip
import json

import boto3

BUCKET = "kandji-snapshots-test"
SECRET_NAME = "kandji-snapshots/api-token"


def create_bucket(name: str = BUCKET) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


def create_secret(value: str, name: str = SECRET_NAME) -> str:
    return boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"]


def all_keys(bucket: str = BUCKET, prefix: str = "") -> list[str]:
    s3 = boto3.client("s3")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def read_object(key: str, bucket: str = BUCKET) -> bytes:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return gzip.decompress(body) if key.endswith(".gz") else body


def read_rows(keys: list[str], bucket: str = BUCKET) -> list[dict]:
    return [json.loads(line) for key in keys for line in read_object(key, bucket).splitlines() if line]


def manifests(bucket: str = BUCKET) -> list[dict]:
    return [json.loads(read_object(key, bucket)) for key in all_keys(bucket, "snapshots/manifests/")]


def subscribe_queue(topic_arn: str, name: str, *, raw: bool = True, filter_policy: dict | None = None) -> str:
    """A new SQS queue subscribed to the SNS topic (raw delivery: the message as published); its URL."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"RawMessageDelivery": "true"} if raw else {}
    if filter_policy:
        attributes["FilterPolicy"] = json.dumps(filter_policy)
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def drain_queue(queue_url: str, sqs=None) -> list[dict]:
    """Every message waiting in an SQS queue (with attributes), deleted as read."""
    sqs = sqs or boto3.client("sqs")
    messages = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                       WaitTimeSeconds=0).get("Messages", []):
        messages.extend(batch)
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(batch)])
    return messages
