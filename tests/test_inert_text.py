"""inert_text.one_line, the one rendering of a fleet name for people: unsafe characters become spaces,
whitespace runs one space, the result cut to the limit with an ellipsis."""

from __future__ import annotations

import random

import pytest

from kandji_snapshots.inert_text import ELLIPSIS, one_line


@pytest.mark.parametrize(("name", "limit", "shown"), [
    ("Mac\nSeverity: info", 80, "Mac Severity: info"),
    ("\x1b]8;;http://x\x07click\x1b]8;;\x07", 80, "]8;;http://x click ]8;;"),
    ("evil\u202egnp.exe", 80, "evil gnp.exe"),
    ("  zero\u200bwidth \t\r\n tabs  ", 80, "zero width tabs"),
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghijk", 10, "abcdefghi" + ELLIPSIS),
    ("abcd efghijk", 5, "abcd" + ELLIPSIS),
    ("abc  defghijk", 5, "abc" + ELLIPSIS),  # the space before the cut is not kept
    (" " * 100_000 + "name", 80, "name"),  # whitespace before the name: still found
    ("x" * 1_000 + "\n", None, "x" * 1_000),
    (None, 80, "None"),
    (12345, 3, "12" + ELLIPSIS),
])
def test_a_name_is_one_inert_bounded_line(name, limit, shown):
    assert one_line(name, limit) == shown


def reference(value, limit):
    """The documented rule, written the plain way (scans the whole value)."""
    from kandji_snapshots.inert_text import is_unsafe

    text = " ".join("".join(" " if c.isspace() or is_unsafe(c) else c for c in str(value)).split())
    return text[: max(0, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS if len(text) > limit else text


def test_stopping_at_the_limit_renders_what_the_whole_scan_renders():
    rng = random.Random(20261207)
    alphabet = "ab \t\n\u202e\u200b\x1b\x00é漢\u2028" + "\U0001f600"
    for _ in range(3_000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        limit = rng.randrange(1, 30)
        assert one_line(value, limit) == reference(value, limit), (value, limit)
