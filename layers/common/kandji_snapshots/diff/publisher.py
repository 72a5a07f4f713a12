"""Publishing messages to SNS: batches within PublishBatch's limits, failed entries retried.

The domain sees only `Publisher.publish_batch(messages)`; `SnsPublisher` is the AWS
adapter, `MemoryPublisher` the in-memory one for tests and local runs, `ChatPublisher`
copies the high-severity events and summaries to a chat topic. Batches are planned here
too (`plan_batches`), because the limits are SNS's.

A message with an e-mail text goes out with `MessageStructure=json`: {"default": the JSON
event, "email": the text}. Queues, functions and HTTP(S) endpoints have no key of their own,
so they get `default`, the JSON event as before; e-mail subscribers get the text. Its size
(and so the shrinking of oversized events) counts the whole structure, subject included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kandji_snapshots.diff.events import encode_event, shrink_event
from kandji_snapshots.diff.messages import MessageContext, chat_notification, event_subject, message_email, wants_chat
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
    body: str  # what queues, functions and HTTP(S) endpoints receive: the JSON event
    attributes: dict[str, str]
    subject: str | None = None  # SNS Subject: ASCII, under 100 characters (diff/messages.py makes it so)
    email: str | None = None  # e-mail subscribers' text; with it the message is JSON-structured
    size: int = field(init=False)  # bytes SNS counts: message, subject, attribute names, types and values

    def __post_init__(self) -> None:
        attribute_bytes = sum(len(name.encode()) + len(ATTRIBUTE_TYPE) + len(value.encode())
                              for name, value in self.attributes.items())
        object.__setattr__(self, "size", len(self.wire_message.encode()) + len((self.subject or "").encode())
                           + attribute_bytes)

    @property
    def structured(self) -> bool:
        return self.email is not None

    @property
    def wire_message(self) -> str:
        """The Message parameter as sent."""
        if self.email is None:
            return self.body
        return json.dumps({"default": self.body, "email": self.email}, separators=(",", ":"), ensure_ascii=False)


class Publisher(Protocol):
    def publish_batch(self, messages: Sequence[Message]) -> None:
        """Publish every message or raise PublishError (saying which were published)."""


def event_attributes(event: dict[str, Any]) -> dict[str, str]:
    # SNS rejects empty attribute values; a platform-less device says so.
    return {name: str(event.get(name) or "unknown") for name in ATTRIBUTE_NAMES}


def event_message(event: dict[str, Any], changes_uri: str, *, attributes: dict[str, str] | None = None,
                  context: MessageContext = MessageContext()) -> Message:
    """The message for one event (JSON, subject, e-mail text), shrunk (never dropped) when it would exceed the limit."""
    attributes = attributes or event_attributes(event)
    subject = event_subject(event)
    email = message_email(event, context)  # bounded whatever the event holds
    message = Message(event["event_id"], encode_event(event), attributes, subject, email)
    if message.size <= MAX_BATCH_BYTES:
        return message
    shrunk = shrink_event(event, changes_uri, lambda body: Message(
        event["event_id"], body, attributes, subject, email).size <= MAX_BATCH_BYTES)
    return Message(event["event_id"], encode_event(shrunk), attributes, subject, email)


def chat_message(message: Message, context: MessageContext = MessageContext()) -> Message | None:
    """The chat-topic copy of a message (custom-notification JSON), or None when chat does not want it."""
    event = json.loads(message.body)
    if not wants_chat(event):
        return None
    body = json.dumps(chat_notification(event, context), separators=(",", ":"), ensure_ascii=False)
    return Message(message.id, body, message.attributes, message.subject)


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
    entry: dict[str, Any] = {
        "Id": message.id,
        "Message": message.wire_message,
        "MessageAttributes": {name: {"DataType": ATTRIBUTE_TYPE, "StringValue": value}
                              for name, value in message.attributes.items()},
    }
    if message.subject:
        entry["Subject"] = message.subject
    if message.structured:
        entry["MessageStructure"] = "json"
    return entry


class ChatPublisher:
    """Publishes every batch to `primary`, and first its high-severity events and summaries to `chat`.

    Chat goes first: when it fails, nothing of the batch is published yet, so the differ's retry
    duplicates nothing on the main topic (a chat message may then be posted twice).
    """

    def __init__(self, primary: Publisher, chat: Publisher, context: MessageContext = MessageContext()):
        self._primary = primary
        self._chat = chat
        self._context = context

    def publish_batch(self, messages: Sequence[Message]) -> None:
        copies = [copy for copy in (chat_message(message, self._context) for message in messages) if copy]
        if copies:
            try:
                self._chat.publish_batch(copies)
            except PublishError as error:
                raise PublishError(f"Chat notifications: {error} Nothing of this batch was published to the "
                                   "changes topic.", failed=[{"Id": m.id} for m in messages]) from error
        self._primary.publish_batch(messages)


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
