"""What people read: SNS subjects, e-mail bodies and chat notifications for change events.

Queues, functions and HTTP endpoints keep receiving the JSON event itself (diff/events.py);
this module renders the human variants next to it:

* `subject(...)`: an SNS Subject. SNS requires ASCII text that begins with a letter, number or
  punctuation mark, without line breaks or control characters, shorter than 100 characters.
  Non-ASCII text (device names) is transliterated (é -> e) or replaced by `?`, never rejected.
* `event_email` / `summary_email`: plain text an e-mail subscriber reads in ten seconds.
* `chat_notification`: the custom-notification format Amazon Q Developer in chat applications
  (formerly AWS Chatbot) renders in Slack, Microsoft Teams or Amazon Chime.

Every rendering is bounded (values, lists and texts are cut), so a message's size is known
whatever the event holds. Names and values come from the fleet, where anyone who holds a device
can choose them: each is shown as one inert line (`inert_text.one_line`), so no line break,
bidi override or Markdown in a name can forge a line of an e-mail or a link in chat.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kandji_snapshots.inert_text import NAME_MAX_CHARS, one_line
from kandji_snapshots.query.athena_sql import by_name

SUBJECT_MAX_CHARS = 99  # SNS: "must be less than 100 characters long"
VALUE_MAX_CHARS = 120  # a before/after value shown to a person
EMAIL_MAX_CHANGES = 20  # changes listed in one e-mail; the rest are counted
CHAT_DESCRIPTION_MAX_CHARS = 3000  # keeps a chat message one screen long
CHAT_TITLE_MAX_CHARS = 250
CHAT_MAX_ITEMS = 5  # next steps and keywords

DEVICE_HISTORY_QUERY = by_name("device_change_history")
HIGH_SEVERITY_QUERY = by_name("high_severity_changes")

# What a change type says in a subject when no rule gave a reason.
_HEADLINES = {
    "device_added": "New device",
    "device_removed": "Device removed",
    "snapshot_summary": "Snapshot summary",
}


@dataclass(frozen=True)
class MessageContext:
    """Where a reader looks next: the stack's Athena workgroup and database (empty = unknown)."""

    athena_workgroup: str = ""
    athena_database: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "MessageContext":
        """ATHENA_WORKGROUP and ATHENA_DATABASE (optional), as the differ and the digest are deployed."""
        return cls(athena_workgroup=(env.get("ATHENA_WORKGROUP") or "").strip(),
                   athena_database=(env.get("ATHENA_DATABASE") or "").strip())

    def athena_place(self) -> str:
        parts = [f"workgroup {self.athena_workgroup}" if self.athena_workgroup else "",
                 f"database {self.athena_database}" if self.athena_database else ""]
        where = ", ".join(part for part in parts if part)
        return f"Athena ({where})" if where else "Athena (this stack's workgroup)"


# --- text helpers -------------------------------------------------------------------

_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                             "\u2014": "-", "\u2026": "...", "\u00a0": " ", "\u00df": "ss", "\u00e6": "ae",
                             "\u00c6": "AE", "\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L"})
def ascii_text(value: Any) -> str:
    """`value` as one inert line (`one_line`) of printable ASCII: accents dropped, other characters `?`."""
    text = unicodedata.normalize("NFKD", one_line(value, None).translate(_TYPOGRAPHY))
    text = "".join(char for char in text if not unicodedata.combining(char))
    return "".join(char if " " <= char <= "~" else "?" for char in text).strip()


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."


def shown(value: Any, limit: int = VALUE_MAX_CHARS) -> str:
    """A before/after value for people: JSON-ish, one inert line, cut."""
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return one_line(text, limit) or '""'


def inert_name(value: Any, missing: str) -> str:
    """A device, app or user name (or a serial, an id) for people: one inert line, cut; `missing` when empty."""
    return one_line(value or "") or missing


def _subject_text(severity: str, headline: str, device: str) -> str:
    head = cut(ascii_text(f"[{severity}] {headline}"), 60)
    tail = ascii_text(device)
    return f"{head} on {tail}" if tail else head


def subject(severity: str, headline: str, device: str = "") -> str:
    """`[high] FileVault turned off on Noah's MacBook Pro (JF33TNMMBY)`, within SNS's rules."""
    text = _subject_text(severity, headline, device)
    if len(text) > SUBJECT_MAX_CHARS:
        text = cut(text, SUBJECT_MAX_CHARS)
    text = text.lstrip(" ")
    return text or "Kandji change"


def device_label(event: dict[str, Any], user: str = "", room: int | None = None) -> str:
    """`Noah's MacBook Pro (JF33TNMMBY)`, or with `user`: `MacBook Pro (JF33TNMMBY, Noah Ames)`.

    The name is cut (to 34 characters, or to what `room` leaves) so the serial always fits a subject.
    """
    name = str(event.get("device_name") or "").strip()
    serial = str(event.get("serial_number") or "").strip()
    inside = ", ".join(part for part in (ascii_text(serial)[:30], ascii_text(user)[:30]) if part)
    suffix = f" ({inside})" if inside else ""
    if not name and not serial:
        return f"device {event.get('device_id', '?')}" + suffix
    limit = 34 if room is None else max(8, min(34, room - len(suffix)))
    return cut(ascii_text(name) or "unnamed device", limit) + suffix


def short_user(event: dict[str, Any]) -> str:
    """The user's name (else e-mail) for a one-line label; empty when none, or when the device's
    name already says whose it is (`Noah's MacBook Pro` of Noah Ames)."""
    user = event.get("user")
    if not isinstance(user, dict):
        return ""
    who = ascii_text(user.get("name") or user.get("email") or "")
    first = who.split(" ")[0].split("@")[0].lower()
    if not first or first in ascii_text(event.get("device_name") or "").lower():
        return ""
    return who


def user_label(event: dict[str, Any], brackets: str = "<>") -> str:
    """`Noah Ames <noah@example.com>` for an e-mail or a chat message; says so when there is no user.

    An event without the `user` field (written before events carried it, or shortened to fit SNS)
    does not tell: "unknown", not "none".
    """
    if "user" not in event:
        return "(unknown)"
    user = event["user"]
    if isinstance(user, dict):
        full_name, email = inert_name(user.get("name"), ""), inert_name(user.get("email"), "")
        if full_name and email:
            return f"{full_name} {brackets[0]}{email}{brackets[1]}"
        if full_name or email:
            return full_name or email
    elif user:
        return inert_name(user, "(no user assigned)")
    return "(no user assigned)"


def headline(event: dict[str, Any]) -> str:
    """What happened, in a few words: the rule's reason when there is one."""
    change_type = event.get("change_type", "")
    if change_type == "device_changed":
        changes = event.get("changes") or []
        reasons = list(dict.fromkeys(change["reason"] for change in changes if change.get("reason")))
        if reasons:
            text = reasons[0][:1].upper() + reasons[0][1:]
            return text + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")
        if len(changes) == 1:
            return f"{inert_name(changes[0].get('field'), 'a field')} changed"
        count = event.get("change_count", len(changes))
        return f"{count} fields changed"
    if change_type.startswith("app_"):
        app = event.get("app") or {}
        app_name = inert_name(app.get("app_name") or app.get("bundle_id"), "app")
        version, previous = shown(app.get("version"), 40), shown(app.get("previous_version"), 40)
        if change_type == "app_updated":
            return f"{app_name} updated {previous} -> {version}"
        if change_type == "app_installed":
            return f"{app_name} {version if app.get('version') else ''} installed".replace("  ", " ")
        return f"{app_name} removed"
    return _HEADLINES.get(change_type, change_type.replace("_", " ") or "Change")


def event_subject(event: dict[str, Any]) -> str:
    if event.get("change_type") == "snapshot_summary":
        return summary_subject(event)
    severity, what = event.get("severity", "info"), headline(event)
    room = SUBJECT_MAX_CHARS - len(_subject_text(severity, what, "")) - len(" on ")
    who = short_user(event)
    if who and len(device_label(event, who)) <= room:  # the user only when the name need not be cut for it
        return subject(severity, what, device_label(event, who))
    return subject(severity, what, device_label(event, room=room))


def summary_subject(summary: dict[str, Any]) -> str:
    if summary.get("first_snapshot"):
        text = f"First snapshot {summary.get('snapshot_id')}: {summary.get('device_count')} devices"
    else:
        text = (f"Snapshot {summary.get('snapshot_id')}: {summary.get('event_count')} changes on "
                f"{summary.get('device_count')} devices")
        if summary.get("suppressed"):
            text += " (summary only)"
    return subject(summary.get("severity", "info"), text)


def device_history_sql(serial: str) -> str:
    """The saved "change history of one device" query, with this device's serial filled in."""
    return DEVICE_HISTORY_QUERY.with_values(serial_number=one_line(str(serial)))


# --- e-mail -------------------------------------------------------------------------

def event_email(event: dict[str, Any], context: MessageContext = MessageContext()) -> str:
    """The plain-text body an e-mail subscriber reads: what happened, to which device and whose, before ->
    after, and where to look next, in the first ten lines or so; the identifiers and the SQL below them."""
    change_type = event.get("change_type", "")
    serial = inert_name(event.get("serial_number"), "")
    device = inert_name(event.get("device_name"), "an unnamed device") + (f" ({serial})" if serial else "")
    lines = [f"{headline(event)} on {device}.", ""]
    lines += [f"Severity:  {inert_name(event.get('severity'), 'info')} ({inert_name(change_type, 'change')})",
              f"Device:    {inert_name(event.get('device_name'), '(no name)')}, serial {serial or '(unknown)'}, "
              f"{inert_name(event.get('platform'), 'platform unknown')}",
              f"User:      {user_label(event)}", ""]
    lines += _what_changed(event)
    if event.get("truncated"):
        lines.append(f"This alert was shortened to fit SNS; the full event is in {event.get('changes_uri')}")
    if serial:
        lines += ["", f"Next:      this device's change history in {context.athena_place()}: the saved query "
                      f"\"{DEVICE_HISTORY_QUERY.title}\" with serial {serial} (its SQL is at the end)"]
    lines += ["", f"Snapshot:  {event.get('snapshot_id')} (compared with {event.get('previous_snapshot_id')})",
              f"Device id: {inert_name(event.get('device_id'), '(unknown)')}",
              f"Event id:  {event.get('event_id')}"]
    if serial:
        lines += ["", device_history_sql(event["serial_number"])]
    return "\n".join(lines) + "\n"


def _severe_first(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes a rule raised first (a person reads the top lines), the rest in their order."""
    return sorted(changes, key=lambda change: not change.get("reason"))


def _what_changed(event: dict[str, Any]) -> list[str]:
    change_type = event.get("change_type", "")
    if change_type == "device_changed":
        changes = _severe_first(event.get("changes") or [])
        lines = ["What changed (before -> after):"]
        for change in changes[:EMAIL_MAX_CHANGES]:
            why = f"   [{change.get('severity')}: {change['reason']}]" if change.get("reason") else ""
            lines.append(f"  {inert_name(change.get('field'), '(field)')}: {shown(change.get('before'))} -> "
                         f"{shown(change.get('after'))}{why}")
        total = event.get("change_count", len(changes))
        if total > min(len(changes), EMAIL_MAX_CHANGES):
            lines.append(f"  ... and {total - min(len(changes), EMAIL_MAX_CHANGES)} more (see the history below)")
        return lines
    if change_type.startswith("app_"):
        app = event.get("app") or {}
        return [f"App:       {inert_name(app.get('app_name'), '(no name)')} "
                f"({inert_name(app.get('bundle_id'), 'no bundle id')})",
                f"Version:   {shown(app.get('previous_version'))} -> {shown(app.get('version'))}"]
    apps = event.get("apps")
    count = event.get("app_count", len(apps) if isinstance(apps, list) else None)
    verb = "enrolled in" if change_type == "device_added" else "no longer listed by"
    known = f"{count} apps" if count is not None else "apps unknown"
    return [f"The device is {verb} Kandji ({known})."]


def summary_email(summary: dict[str, Any], context: MessageContext = MessageContext()) -> str:
    counts = {name: count for name, count in (summary.get("counts") or {}).items() if count}
    lines = [summary_subject(summary), ""]
    if summary.get("first_snapshot"):
        lines.append("This is the first snapshot: there is nothing to compare it with yet.")
    else:
        lines.append(f"{summary.get('event_count')} changes between snapshots {summary.get('previous_snapshot_id')} "
                     f"and {summary.get('snapshot_id')} ({summary.get('device_count')} devices).")
        lines += [f"  {name}: {count}" for name, count in counts.items()]
        severity_counts = summary.get("severity_counts") or {}
        lines.append(f"High severity: {severity_counts.get('high', 0)}")
    if summary.get("suppressed"):
        lines.append(f"Over {summary.get('max_events_per_run')} changes: only this summary was published.")
    lines += ["", f"Every event: {summary.get('changes_uri')}",
              f"High-severity changes: in {context.athena_place()}, "
              f"run the saved query \"{HIGH_SEVERITY_QUERY.title}\"."]
    return "\n".join(lines) + "\n"


def message_email(event: dict[str, Any], context: MessageContext = MessageContext()) -> str:
    if event.get("change_type") == "snapshot_summary":
        return summary_email(event, context)
    return event_email(event, context)


# --- chat (Amazon Q Developer in chat applications custom notifications) ------------

def wants_chat(event: dict[str, Any]) -> bool:
    """The chat channel gets the high-severity events and every run's summary."""
    return event.get("change_type") == "snapshot_summary" or event.get("severity") == "high"


_MARKDOWN = re.compile(r"[<>`*~|]")


def _plain(text: Any) -> str:
    """Text for chat outside a code span: one inert line without Markdown's emphasis, code marks, links
    (`<...>`, @-mentions; `[text](url)` becomes `[text] (url)`, which Markdown does not link)."""
    return _MARKDOWN.sub("", one_line(text, None)).replace("](", "] (")


def _literal(value: Any, missing: str, limit: int = NAME_MAX_CHARS) -> str:
    """A name or value for chat: one inert line in a code span, where Markdown makes neither a link nor a line."""
    return "`" + (one_line(value or "", limit).replace("`", "'") or missing) + "`"


def chat_notification(event: dict[str, Any], context: MessageContext = MessageContext()) -> dict[str, Any]:
    """A custom notification: {version, source, id, content: {textType, title, description, nextSteps,
    keywords}, metadata: {threadId, summary, eventType, relatedResources, additionalContext}}."""
    is_summary = event.get("change_type") == "snapshot_summary"
    emoji = ":rotating_light:" if event.get("severity") == "high" else ":information_source:"
    title = cut(f"{emoji} {_plain(event_subject(event))}", CHAT_TITLE_MAX_CHARS)
    if is_summary:
        description = _chat_summary(event)
        steps = [f"All events: `{event.get('changes_uri')}`",
                 f"In {context.athena_place()}: saved query \"{HIGH_SEVERITY_QUERY.title}\""]
        thread = f"kandji-snapshot-{event.get('snapshot_id')}"
        resources = [str(event.get("changes_uri"))] if event.get("changes_uri") else []
    else:
        description = _chat_event(event)
        steps = [f"In {context.athena_place()}: saved query \"{DEVICE_HISTORY_QUERY.title}\" with serial "
                 f"{_literal(event.get('serial_number'), '')}"] if event.get("serial_number") else []
        steps.append(f"Open the device in Kandji (device id {_literal(event.get('device_id'), '?')})")
        thread = f"kandji-device-{event.get('device_id')}"
        resources = [str(event.get("serial_number"))] if event.get("serial_number") else []
    keywords = [str(word) for word in (event.get("severity"), event.get("change_type"), event.get("platform")) if word]
    return {
        "version": "1.0",
        "source": "custom",
        "id": str(event.get("event_id")),
        "content": {
            "textType": "client-markdown",
            "title": title,
            "description": cut(description, CHAT_DESCRIPTION_MAX_CHARS),
            "nextSteps": [cut(step, 300) for step in steps[:CHAT_MAX_ITEMS]],
            "keywords": keywords[:CHAT_MAX_ITEMS],
        },
        "metadata": {
            "threadId": cut(thread, 100),
            "summary": cut(_plain(event_subject(event)), 100),
            "eventType": str(event.get("change_type")),
            "relatedResources": resources,
            "additionalContext": {"event_id": str(event.get("event_id")), "snapshot_id": str(event.get("snapshot_id"))},
        },
    }


def _chat_event(event: dict[str, Any]) -> str:
    lines = [f"*Device:* {_literal(event.get('device_name'), '(no name)')} "
             f"({_literal(event.get('serial_number'), 'no serial')}, "
             f"{_plain(inert_name(event.get('platform'), 'unknown platform'))})"]
    lines.append(f"*User:* {_literal(user_label(event, brackets='()'), '(unknown)')}")
    change_type = event.get("change_type", "")
    if change_type == "device_changed":
        changes = _severe_first(event.get("changes") or [])
        for change in changes[:EMAIL_MAX_CHANGES]:
            why = f" ({_plain(change['reason'])})" if change.get("reason") else ""
            lines.append(f"- {_literal(change.get('field'), '(field)', 200)}: "
                         f"{_literal(shown(change.get('before')), '')} "
                         f"-> {_literal(shown(change.get('after')), '')}{why}")
        total = event.get("change_count", len(changes))
        if total > min(len(changes), EMAIL_MAX_CHANGES):
            lines.append(f"- ... and {total - min(len(changes), EMAIL_MAX_CHANGES)} more")
    elif change_type.startswith("app_"):
        app = event.get("app") or {}
        version = _literal(shown(app.get("version")), "")
        if change_type == "app_updated":
            version = f"{_literal(shown(app.get('previous_version')), '')} -> {version}"
        elif change_type == "app_removed":
            version = _literal(shown(app.get("previous_version") or app.get("version")), "")
        lines += [f"*App:* {_literal(app.get('app_name'), '(no name)')} "
                  f"({_literal(app.get('bundle_id'), 'no bundle id')})",
                  f"*Version:* {version}"]
    else:
        lines += [_plain(line.strip()) for line in _what_changed(event)]
    lines.append(f"*Snapshot:* `{event.get('snapshot_id')}`")
    return "\n".join(lines)


def _chat_summary(summary: dict[str, Any]) -> str:
    if summary.get("first_snapshot"):
        return (f"First snapshot `{summary.get('snapshot_id')}`: {summary.get('device_count')} devices, "
                "nothing to compare yet.")
    counts = ", ".join(f"{name} {count}" for name, count in (summary.get("counts") or {}).items() if count) or "none"
    high = (summary.get("severity_counts") or {}).get("high", 0)
    text = (f"*{summary.get('event_count')} changes* on {summary.get('device_count')} devices "
            f"(`{summary.get('previous_snapshot_id')}` -> `{summary.get('snapshot_id')}`)\n"
            f"*By type:* {counts}\n*High severity:* {high}")
    if summary.get("suppressed"):
        text += f"\nOver {summary.get('max_events_per_run')} changes: events were not published one by one."
    return text
