"""Publishing messages to SNS: batches within PublishBatch's limits, failed entries retried.

The domain sees only `Publisher.publish_batch(messages)`; `SnsPublisher` is the AWS
adapter, `MemoryPublisher` the in-memory one for tests and local runs. Batches are
planned here too (`plan_batches`), because the limits are SNS's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kandji_snapshots.diff.events import encode_event, shrink_event
from kandji_snapshots.errors import KandjiSnapshotsError

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 262_144  # 256 KiB for the whole PublishBatch: bodies and attributes
ATTRIBUTE_TYPE = "String"
# Attributes subscribers filter on (subscription filter policies).
ATTRIBUTE_NAMES = ("change_type", "severity", "platform")


class PublishError(KandjiSnapshotsError):
    """Some messages of a batch could not be published."""

    def __init__(self, message: str, *, published_ids: Sequence[str] = (), failed: Sequence[dict] = ()):
        super().__init__(message)
        self.published_ids = list(published_ids)  # entries of the batch SNS did accept
        self.failed = list(failed)


@dataclass(frozen=True)
class Message:
    id: str  # unique within a batch; the event_id
    body: str
    attributes: dict[str, str]
    size: int = field(init=False)  # bytes SNS counts: body plus attribute names, types and values

    def __post_init__(self) -> None:
        attribute_bytes = sum(len(name.encode()) + len(ATTRIBUTE_TYPE) + len(value.encode())
                              for name, value in self.attributes.items())
        object.__setattr__(self, "size", len(self.body.encode()) + attribute_bytes)


class Publisher(Protocol):
    def publish_batch(self, messages: Sequence[Message]) -> None:
        """Publish every message or raise PublishError (saying which were published)."""


def event_attributes(event: dict[str, Any]) -> dict[str, str]:
    # SNS rejects empty attribute values; a platform-less device says so.
    return {name: str(event.get(name) or "unknown") for name in ATTRIBUTE_NAMES}


def event_message(event: dict[str, Any], changes_uri: str, *, attributes: dict[str, str] | None = None) -> Message:
    """The message for one event, shrunk (never dropped) when it alone would exceed the limit."""
    attributes = attributes or event_attributes(event)
    message = Message(event["event_id"], encode_event(event), attributes)
    if message.size <= MAX_BATCH_BYTES:
        return message
    attribute_bytes = message.size - len(message.body.encode())
    shrunk = shrink_event(event, changes_uri,
                          lambda body: len(body.encode()) + attribute_bytes <= MAX_BATCH_BYTES)
    return Message(event["event_id"], encode_event(shrunk), attributes)


def plan_batches(messages: Iterable[Message]) -> list[list[Message]]:
    """Consecutive batches of at most 10 messages and 256 KiB, in order."""
    batches: list[list[Message]] = []
    batch: list[Message] = []
    batch_bytes = 0
    for message in messages:
        if message.size > MAX_BATCH_BYTES:
            raise ValueError(f"message {message.id} is {message.size} bytes, over SNS's {MAX_BATCH_BYTES}; "
                             "build it with event_message() so it is shrunk")
        if batch and (len(batch) == MAX_BATCH_ENTRIES or batch_bytes + message.size > MAX_BATCH_BYTES):
            batches.append(batch)
            batch, batch_bytes = [], 0
        batch.append(message)
        batch_bytes += message.size
    if batch:
        batches.append(batch)
    return batches


def _check_batch(messages: Sequence[Message]) -> None:
    if len(messages) > MAX_BATCH_ENTRIES or sum(message.size for message in messages) > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {len(messages)} messages / {sum(m.size for m in messages)} bytes is over "
                         f"PublishBatch's limits ({MAX_BATCH_ENTRIES} entries, {MAX_BATCH_BYTES} bytes)")
    if len({message.id for message in messages}) != len(messages):
        raise ValueError("message ids in one batch must be distinct")


class SnsPublisher:
    """PublishBatch to one topic; entries SNS reports as failed are retried with backoff."""

    def __init__(self, sns_client: Any, topic_arn: str, *, max_attempts: int = 5, base_delay_seconds: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep):
        self._sns = sns_client
        self.topic_arn = topic_arn
        self._max_attempts = max_attempts
        self._base_delay = base_delay_seconds
        self._sleep = sleep

    def publish_batch(self, messages: Sequence[Message]) -> None:
        _check_batch(messages)
        pending = list(messages)
        published: list[str] = []
        failed: list[dict[str, Any]] = []
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._sleep(self._base_delay * 2 ** (attempt - 2))
            try:
                response = self._sns.publish_batch(TopicArn=self.topic_arn,
                                                   PublishBatchRequestEntries=[_entry(m) for m in pending])
            except Exception as error:  # botocore already retried throttling and 5xx
                raise PublishError(f"PublishBatch to {self.topic_arn} failed: {_aws_error(error)}. "
                                   f"{len(published)} of {len(messages)} messages were published.",
                                   published_ids=published,
                                   failed=[{"Id": m.id} for m in pending]) from error
            published.extend(item["Id"] for item in response.get("Successful", []))
            failed = list(response.get("Failed", []))
            if not failed:
                return
            if any(item.get("SenderFault") for item in failed):
                break  # the request itself is wrong: retrying cannot help
            retry_ids = {item["Id"] for item in failed}
            pending = [message for message in pending if message.id in retry_ids]
        details = "; ".join(f"{item['Id']}: {item.get('Code')} {item.get('Message', '')}".strip() for item in failed)
        raise PublishError(f"PublishBatch to {self.topic_arn}: {len(failed)} of {len(messages)} messages failed "
                           f"after {attempt} attempt(s) ({details}).", published_ids=published, failed=failed)


def _entry(message: Message) -> dict[str, Any]:
    return {
        "Id": message.id,
        "Message": message.body,
        "MessageAttributes": {name: {"DataType": ATTRIBUTE_TYPE, "StringValue": value}
                              for name, value in message.attributes.items()},
    }


def _aws_error(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return f"{code}: {response['Error'].get('Message', '')}" if code else f"{type(error).__name__}: {error}"


class MemoryPublisher:
    """Keeps what was published: for tests and local runs."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []

    def publish_batch(self, messages: Sequence[Message]) -> None:
        _check_batch(messages)
        self.batches.append(list(messages))

    @property
    def messages(self) -> list[Message]:
        return [message for batch in self.batches for message in batch]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(message.body) for message in self.messages]
