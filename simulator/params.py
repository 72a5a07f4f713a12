"""Query parameters as the API (Django REST framework) reads them: a bad one is a 400 with DRF's wording."""
from __future__ import annotations

from typing import Any


class BadRequest(Exception):
    """A query the API answers 400 to; `body` is its JSON."""

    def __init__(self, body: Any):
        super().__init__(body)
        self.body = body


def int_param(params: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest({name: ["A valid integer is required."]}) from None
    if value < minimum:
        raise BadRequest({name: [f"Ensure this value is greater than or equal to {minimum}."]})
    return value
