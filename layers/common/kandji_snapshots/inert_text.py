"""Text from the fleet, made inert before a person reads it.

Device, app and user names are chosen by whoever holds the device (a user can rename their Mac),
so a name may carry line breaks that forge lines of an e-mail ("Severity: info"), a bidi override
(U+202E) that shows text backwards, zero-width characters, or terminal escapes (clear the screen,
an OSC 8 link). `one_line` is the one rendering of such a value for people, in every format:
e-mails, subjects, chat, the digest and the operator's terminal.
"""

from __future__ import annotations

import unicodedata
from typing import Any

NAME_MAX_CHARS = 80  # a device, app or user name as people see it
ELLIPSIS = "…"

# Control characters (C0, DEL, C1: ESC starts every terminal escape), format characters (bidi
# overrides and isolates, zero-width space and joiners, soft hyphen, tag characters), line and
# paragraph separators, surrogates and private-use characters: none is text a person should read.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def is_unsafe(char: str) -> bool:
    """True for a character that moves the cursor, breaks a line, reorders text or is invisible."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def one_line(value: Any, limit: int | None = NAME_MAX_CHARS) -> str:
    """`value` as one inert line: every unsafe character (line breaks, tabs and escapes included) becomes a
    space, runs of whitespace become one, and the text is cut to `limit` characters, ending in `…`."""
    kept: list[str] = []
    space_due = False  # a space before the next character kept: never leading, never trailing, never two
    for char in str(value):
        if char.isspace() or is_unsafe(char):
            space_due = bool(kept)
            continue
        if space_due:
            kept.append(" ")
            space_due = False
        kept.append(char)
        if limit is not None and len(kept) > limit:  # it will be cut: the rest of a long name is never scanned
            break
    text = "".join(kept)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS
    return text
