"""The tenant's hourly rate limit as the API reports it, in the headers of its responses."""

from __future__ import annotations

from typing import Any

import requests

from kandji_snapshots.kandji.client import int_header

DOCUMENTED_HOURLY_LIMIT = 10_000  # Kandji's published limit per tenant, when the API does not say


class RateHeaders:
    """The hourly rate-limit headers of every response on a session, and how many responses came back."""

    def __init__(self, session: requests.Session):
        self.remaining_hour: int | None = None
        self.limit_hour: int | None = None
        self.responses = 0
        session.hooks["response"].append(self._observe)

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.responses += 1
        remaining = int_header(response.headers, "x-ratelimit-remaining-hour")
        limit = int_header(response.headers, "x-ratelimit-limit-hour")
        if remaining is not None:
            self.remaining_hour = remaining
        if limit is not None:
            self.limit_hour = limit

    def describe(self) -> str:
        if self.remaining_hour is None:
            return (f"not reported by the API (Kandji allows {DOCUMENTED_HOURLY_LIMIT:,} requests an hour per "
                    "tenant, shared with every integration)")
        if self.limit_hour is None:
            return f"{self.remaining_hour:,} requests left this hour"
        return f"{self.remaining_hour:,} of {self.limit_hour:,} requests left this hour"
