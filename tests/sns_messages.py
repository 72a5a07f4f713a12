"""What SNS accepts as a subject and what it delivers to each protocol, for the tests of published messages."""

from __future__ import annotations

import json
import string

SECRET_LOOKING = "kandji-api-token-" + "s3cr3t" * 8  # must never reach a subject


def check_subject(text: str) -> None:
    """SNS: ASCII, begins with a letter, number or punctuation mark, no line breaks or control
    characters, less than 100 characters."""
    assert 0 < len(text) < 100, text
    assert all(" " <= char <= "~" for char in text), text
    assert text[0] in string.ascii_letters + string.digits + string.punctuation, text
    assert SECRET_LOOKING not in text and "s3cr3t" not in text


def delivered(wire_message: str, structured: bool, protocol: str) -> str:
    """What SNS delivers to `protocol` (its own key of a JSON-structured message, else `default`)."""
    if not structured:
        return wire_message
    structure = json.loads(wire_message)
    return structure.get(protocol, structure["default"])
